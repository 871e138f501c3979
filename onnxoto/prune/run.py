"""`onnxoto prune` end to end: load, analyze, train with a sparse optimizer, cut, certify, save."""
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np

from .. import dist, graph, groups, progress
from ..groups import keep_all, removed_positions
from ..errors import ModelError, OptionError
from ..latency import LatencyTable, measure_table, measured_ratio, measured_ratios, same_machine
from ..report import latency_text, profile_pair
from ..optim import SGD, AdamW, Dhspg, Hesso, HessoCric
from ..surgery import cut
from ..train import (TrainingSession, check_cuda, check_recalibration, load_data, loss_for, prepare_for_training,
                     recalibrate_batchnorm, to_trainable, trained_params, untrainable_operator)
from ..verify import TOLERANCE, argument_floors, io_feeds, kept_outputs, outputs_and_arguments, relative_difference
from . import provenance
from .batch import model_for_data, session_for
from .clock import Clock
from .metric import evaluate, metric_kind, session_model, training_model
from .loop import model_inputs, targets_for, train, with_teacher_outputs
from .options import PruneOptions, override
from .zigs import target_of, in_training_layout, optimizer_groups, unit_groups

OPTIMIZER_CLASSES = {"hesso": Hesso, "hesso-cric": HessoCric, "dhspg": Dhspg}
RECALIBRATION_SAMPLES = 6400  # BatchNorm statistics of the written model, in batches of the training batch size
LATENCY_SLACK = 0.1  # a measured latency more than 10% over its target is called a miss
SEARCH_ROUNDS = 40  # timed runs of each candidate cut in --target-latency's budget search
VAL_RECALIBRATION_SAMPLES = 1280  # those of the epochs' validation metric: cheaper, close enough to compare epochs


@dataclass
class PruneResult:
    dense_model: str
    pruned_model: str
    keep: dict  # group id -> bool per ZIG
    group_sparsity: float
    target_sparsity: float | None
    target_flops: float | None
    dense: dict = field(default_factory=dict)  # params, flops, metric
    pruned: dict = field(default_factory=dict)
    verified: bool = False
    max_rel_diff: float = float("inf")
    history: list = field(default_factory=list)
    groups: list = field(default_factory=list)  # [{"id", "channels", "kept"}]
    metric: str | None = None
    erased: list = field(default_factory=list)  # erased branches: {"id", "nodes", "params", "flops", "flops_share"}
    is_root: bool = True  # False on the other ranks of a distributed run: they write and print nothing
    settings: dict = field(default_factory=dict)  # the options as run, defaults resolved (lr, loss, batchnorm)
    latency: dict = field(default_factory=dict)  # --target-latency: target, predicted and measured ratios
    seconds: dict = field(default_factory=dict)  # wall time per phase of the run ("training steps", ..., "total")
    trace: list = field(default_factory=list)  # [step, loss, group sparsity] every few steps
    schedule: dict = field(default_factory=dict)  # the pruning phase in steps: start, end, periods, total
    io_shapes: dict = field(default_factory=dict)  # --allow-io-change: graph inputs/outputs the cut changed


@dataclass
class Job:
    """What every step of one run reads: the inputs loaded and checked, the options, the ranks."""
    model: str  # the dense model's path
    output: str
    dense: object  # graph.Model
    analysis: object  # groups.Analysis
    dataset: object  # all of the training data: rank 0 certifies and times on it
    shard: object  # this rank's part of each batch (all of it in one process)
    val: object  # validation Dataset or None
    loss: object  # train.LossSpec
    metric: str | None
    teacher: object  # an inference session of the dense model
    options: PruneOptions
    table: object  # latency.LatencyTable, or None without --target-latency / --round-to auto
    round_to: int  # the block, --round-to auto resolved
    narrow: bool  # widths below the block allowed (--round-to auto: where the table shows they pay)
    comm: object
    log: object
    clock: Clock  # seconds per phase
    rows_per_run: int | None = None  # 1: the model runs one row at a time (a batch fixed to 1), prune.batch
    input_shapes: dict | None = None  # the sizes bound to symbolic input dims (--input-shape or the data's)
    fixed_batch: bool = False  # the dense file takes one row per run: its latency is measured at batch 1
    row_axes: dict = field(default_factory=dict)  # with rows_per_run: outputs whose rows are not on axis 0

    @property
    def run_batch(self):
        """Rows per onnxruntime run outside training."""
        return self.rows_per_run or self.options.batch_size


def prune(model, data, output=None, val=None, options=None, workdir=None, resume=False, log=print, comm=None,
          **overrides):
    """Train `model` (a path) on `data` with a sparse optimizer and write the cut model to `output`."""
    options = override(options or PruneOptions(), **overrides)
    if options.device == "cuda":
        check_cuda()
    comm = comm or dist.communicator(options.device)  # one process: a no-op
    clock = Clock()
    with clock.phase("total"):
        result = _prune(model, data, output, val, options, workdir, resume, log, comm, clock)
    result.seconds = dict(clock.seconds)
    return result


def _prune(model, data, output, val, options, workdir, resume, log, comm, clock):
    keep_work = workdir is not None
    workdir = workdir or tempfile.mkdtemp(prefix="onnxoto-prune-")
    os.makedirs(workdir, exist_ok=True)
    try:
        job = _load(model, data, output or _default_output(model), val, options, comm,
                    log if comm.is_root else (lambda line: None), workdir, resume, clock)
        trained, masks, history, curve = _train(job, workdir, resume)
        if not comm.is_root:  # rank 0 alone cuts, certifies, writes and measures
            result = _result(job, masks, history, float("nan"), curve)
            result.is_root = False
            return result
        erased = _erased(job.analysis, masks)
        with clock.phase("cut and certificate"):
            pruned, diff = _cut_and_certify(job, trained, masks, erased)
        result = _result(job, masks, history, diff, curve)
        result.io_shapes = provenance.io_changes(job.dense.proto, pruned)
        # the weights go beside the file as they came, or when they are too large for one file
        graph.save(provenance.stamp(pruned, job.model, result.settings, result.groups, diff, io_shapes=result.io_shapes),
                   job.output, external=graph.has_external_data(job.model) or None)
        with clock.phase("measuring"):
            return _measured(result, job, pruned, erased)
    finally:
        if not keep_work:
            shutil.rmtree(workdir, ignore_errors=True)


def _load(model, data, output, val, options, comm, log, workdir, resume, clock):
    """Everything the run reads, loaded and checked before any work: model, groups, data, loss; and the
    teacher's outputs of every training sample, when the loss has a teacher."""
    _check_output(output)
    dense = graph.load(model, strict=True, input_shapes=options.input_shapes)
    source, presharded = dist.source_for(data, comm)
    dataset = load_data(source, dense.proto)
    # sizes from the data, a batch fixed to 1, the dense model run on the first batch in a child process
    fit = model_for_data(model, dense, dataset, data, options, log)
    dense = fit.model
    analysis = groups.analyze(dense, allow_io_change=options.allow_io_change)
    if val is not None and any(g.io for g in analysis.prunable):
        raise OptionError("--val with --allow-io-change: the metric of a model whose inputs change size is not "
                          "measured yet; drop --val")
    val_set = load_data(val, dense.proto) if val is not None else None
    loss = _loss(dense, dataset, options, data)
    table = _latency_table(analysis, options, workdir, resume, log, comm) if options.needs_latency else None
    round_to, narrow = table.auto_rounding() if options.round_to == "auto" else (options.round_to, True)
    if options.round_to == "auto":
        log(f"--round-to auto: {round_to}{'' if narrow else ', no widths below it'} "
            f"(from the latency table at batch {table.batch})")
    teacher = session_for(dense.proto, fit.rows_per_run, fit.row_axes)
    with clock.phase("teacher outputs"):
        training_data = with_teacher_outputs(dataset, loss, teacher, options.batch_size)
    return Job(model=model, output=output, dense=dense, analysis=analysis, dataset=dataset,
               shard=dist.shard(training_data, comm, options.batch_size, presharded), val=val_set, loss=loss,
               metric=metric_kind(val_set, loss.form), teacher=teacher, options=options,
               table=table, round_to=round_to, narrow=narrow, comm=comm, log=log, clock=clock,
               rows_per_run=fit.rows_per_run, input_shapes=fit.input_shapes, fixed_batch=fit.fixed_batch,
               row_axes=fit.row_axes)


def _latency_table(analysis, options, workdir, resume, log, comm):
    """--latency-table, else one measured on this machine at the training batch (kept in the work
    folder, where --resume finds it again: a new measurement would select differently)."""
    saved = os.path.join(workdir, "latency_table.json")
    if options.latency_table or (resume and os.path.exists(saved)):
        source = options.latency_table or saved
        table = LatencyTable.load(source)
    elif comm.size > 1:  # each rank would measure its own table and select other channels
        raise OptionError(f"--target-latency/--round-to auto on {comm.size} ranks: give --latency-table "
                          "(`onnxoto profile` writes one)")
    else:
        log(f"measuring the latency table on this machine at batch {options.batch_size} (onnxoto profile)")
        table, source = measure_table(analysis, batch=options.batch_size, log=log), saved
        table.save(saved)
    table.check_groups({g.id: g.num_zigs for g in analysis.prunable}, source)
    return table


def _loss(dense, dataset, options, data):
    """The loss --loss names, or the one the labels imply; refused when the data cannot feed it."""
    choice = options.loss_choice
    if choice is not None and choice.class_labels and not (
            dataset.has_labels and np.issubdtype(dataset.labels.dtype, np.integer)):
        raise OptionError(f"--loss {options.loss} needs integer class labels in {data}")
    # the KL term's factor: with cross-entropy beside it, the distillation weight
    weights = [options.distill_weight] if choice is not None and choice.class_labels and choice.teacher else None
    return loss_for(dense.proto, kind=choice, labels=dataset.labels, temperature=options.temperature,
                    weights=weights)


def _train(job, workdir, resume):
    """Train with the sparse optimizer; returns (the trained ModelProto, its keep masks, the history, the
    curve: the loss trace and the pruning schedule in steps)."""
    options, comm = job.options, job.comm
    batchnorm = options.batchnorm_mode(comm.size)
    prepared, param_map, trainable = _training_graph(job.dense, batchnorm)
    zig_groups = _optimizer_groups(job, trainable, param_map)
    problem = untrainable_operator(prepared, param_map, param_map.training_params(trainable))
    if problem:
        raise ModelError(f"{job.dense.name}: {problem}")
    with job.clock.phase("training graph"):
        session = TrainingSession(prepared, job.loss, workdir=os.path.join(workdir, "artifacts"),
                                  device=options.device, requires_grad=param_map.training_params(trainable),
                                  model_name=job.dense.name, batchnorm=batchnorm, probe=_first_steps(job))
    with session:
        session.rows_per_run, session.row_axes = job.rows_per_run, job.row_axes
        session.whole_inputs = graph.whole_inputs(job.dense.proto)
        export = functools.partial(_export, job, session, param_map, batchnorm)
        opt = _optimizer(job, session, zig_groups, batchnorm)
        on_epoch = None
        if job.val is not None and comm.is_root:
            on_epoch = lambda: {"val_metric": evaluate(_model_so_far(session, batchnorm, export, job),  # noqa: E731
                                                       job.val, job.metric, session_model(job.teacher))}
        trace = []
        history = train(session, opt, job.shard, options, workdir, job.teacher, resume, job.log, comm=comm,
                        on_epoch=on_epoch, clock=job.clock, trace=trace)
        with job.clock.phase("export and recalibration"):
            trained = export()
    return trained, opt.keep_masks(), history, (trace, _schedule(opt, job))


def _schedule(opt, job):
    """When the optimizer pruned, in steps, for the report's curve."""
    per_epoch = -(-len(job.shard) // job.options.batch_size)
    return {"start": opt.schedule.start, "end": opt.schedule.end, "periods": opt.schedule.periods,
            "steps_per_epoch": per_epoch, "total": job.options.epochs * per_epoch}


def _first_steps(job):
    """(inputs, targets) of the first batch: the builder's child process takes the first training and eval
    steps on it, where onnxruntime dying is an error naming the model. None on a rank with no rows."""
    first = next(job.shard.batches(job.rows_per_run or job.options.batch_size))
    names = job.dense.input_names
    if not names or not graph.row_count({n: first[n] for n in names}, graph.whole_inputs(job.dense.proto)):
        return None
    return {n: first[n] for n in names}, targets_for(first, job.loss, job.teacher)


def _training_graph(dense, batchnorm):
    """(the training graph, its ParamMap, the names of the dense model's trainable parameters)."""
    if batchnorm == "batch":
        check_recalibration(dense.proto)
    # operators onnxruntime-training cannot differentiate train in equivalent forms (train.forms)
    prepared, param_map = to_trainable(prepare_for_training(dense.proto, batchnorm))
    # read on the original graph: in the prepared one, BatchNorm's running statistics feed the affine
    # rewrite and would look trainable
    trainable = trained_params(dense.proto)
    return prepared, param_map, trainable


def _optimizer_groups(job, trainable, param_map):
    """The analysis' prunable groups (and erasable branches, with --erase) over the training graph."""
    zig_groups = optimizer_groups(job.analysis, trainable, job.round_to, job.options.group_targets, job.narrow)
    unmatched = [p for p in job.options.group_targets
                 if not any(target_of(g, {p: 0.0}) is not None for g in job.analysis.prunable)]
    if unmatched:
        raise OptionError(f"--group-target {unmatched[0]}: matches no prunable group (ids and layers: "
                          "`onnxoto analyze`)")
    if job.options.erase:
        zig_groups += unit_groups(job.analysis, trainable)
    if not zig_groups:
        raise ModelError(f"{job.dense.name}: no prunable group (run `onnxoto analyze` to see why)")
    return in_training_layout(zig_groups, param_map)


def _optimizer(job, session, zig_groups, batchnorm):
    """The sparse optimizer on the session's parameters, following SGD or AdamW."""
    options, analysis = job.options, job.analysis
    lr = options.learning_rate(job.loss.form)
    base = SGD(lr=lr, momentum=0.9) if options.base == "sgd" else AdamW(lr=lr)
    kwargs = dict(total_steps=options.epochs * -(-len(job.shard) // options.batch_size),
                  target_sparsity=options.target_sparsity, target_flops=options.target_flops,
                  total_flops=analysis.flops, erase_fraction=options.erase, saliency_scope=options.saliency_scope,
                  flops_fn=lambda keep: analysis.predict_cost(_complete_keep(analysis, keep))[1],
                  target_latency=options.target_latency, latency=job.table, **options.extra)
    if options.target_latency is not None and same_machine(job.table.machine):  # the cut can be timed here
        kwargs["latency_fn"] = lambda keeps: measured_ratios(
            job.dense, [cut(job.dense, analysis.groups, _complete_keep(analysis, keep)) for keep in keeps], job.table,
            rounds=SEARCH_ROUNDS)
    if options.optimizer == "hesso-cric":
        kwargs["loss_fn"] = _probe_loss(job, session, batchnorm)
    return OPTIMIZER_CLASSES[options.optimizer](session.params, zig_groups, base, **kwargs)


def _probe_loss(job, session, batchnorm):
    """CRIC's loss: the first batch's, over all ranks. On batch statistics the loss training sees is the
    training graph's (the gradients it also computes are not read: the step that asks for this loss has
    applied its own already)."""
    probe = next(job.shard.batches(job.options.batch_size))
    target = targets_for(probe, session.loss, job.teacher)
    rows = len(probe[session.input_names[0]])
    measure = session.train_step if batchnorm == "batch" else session.eval_loss
    return lambda: job.comm.mean(measure(model_inputs(probe, session), target), weight=rows)


def _model_so_far(session, batchnorm, export, job):
    """The model in training, for the epochs' metric. Eval mode normalizes by the running statistics,
    which training on batch statistics leaves stale: then an export with recalibrated ones is measured."""
    if batchnorm == "frozen":
        return training_model(session)
    return session_model(session_for(export(VAL_RECALIBRATION_SAMPLES), job.rows_per_run, job.row_axes))


def _export(job, session, param_map, batchnorm, samples=RECALIBRATION_SAMPLES):
    """The dense graph with the session's weights; trained on batch statistics, BatchNorm's running
    statistics are then recalibrated on the first `samples` training samples (whole batches)."""
    weights = dict(param_map.to_original(n, w) for n, w in session.weights().items())
    trained = graph.with_initializers(job.dense.proto, weights)
    if batchnorm == "batch":
        batch_size = job.run_batch
        trained = recalibrate_batchnorm(trained, job.shard, batches=-(-samples // batch_size), batch_size=batch_size)
    return trained


def _erased(analysis, masks):
    """The erasable branches training zeroed whole; a branch inside another goes with it (the outer one
    is reported)."""
    erased = [u for u in analysis.erasable if u.id in masks and not masks[u.id].any()]
    return [u for u in erased if not any(set(u.nodes) < set(v.nodes) for v in erased)]


def _cut_and_certify(job, trained, masks, erased):
    """The cut model and its largest difference from the trained one on real batches. The certificate
    compares with the trained model itself: this also proves its zeros are exact."""
    trained_model = graph.Model.from_proto(trained, job.dense.name)
    pruned = cut(trained_model, job.analysis.groups, _complete_keep(job.analysis, masks), erased)
    gone = removed_positions(job.analysis.groups, _complete_keep(job.analysis, masks))
    diff = _verify_on_data(trained_model, pruned, job.dataset, job.options, job.run_batch, gone)
    if diff > TOLERANCE:
        raise ModelError(f"the cut model differs from the trained one by {diff:.3g} (> {TOLERANCE}): "
                         "please report this model")
    return pruned, diff


def _measured(result, job, pruned, erased):
    """The result with the erased branches, and both models' latency and metric."""
    options, analysis = job.options, job.analysis
    if options.target_latency is not None:
        result.latency = _latency_check(job, pruned, result.keep)
    result.erased = [{"id": u.id, "nodes": u.nodes, "params": u.param_count, "flops": u.flops,
                      "flops_share": u.flops / analysis.flops if analysis.flops else 0.0} for u in erased]
    latency_batch = 1 if job.fixed_batch else options.batch_size  # the dense file runs one row at a time
    sample = next(job.dataset.batches(latency_batch))
    dense_profile, pruned_profile = profile_pair([job.model, job.output], batch=latency_batch, sample=sample,
                                                 input_shapes=job.input_shapes)
    result.dense.update(dense_profile)
    result.pruned.update(pruned_profile)
    reference = session_model(job.teacher)
    result.dense["metric"] = evaluate(reference, job.val, job.metric, reference)
    result.pruned["metric"] = evaluate(session_model(session_for(pruned, job.rows_per_run, job.row_axes)), job.val, job.metric,
                                       reference)
    return result


def _latency_check(job, pruned, keep):
    """The written model's latency against the dense one's, measured here, next to the target."""
    target = job.options.target_latency
    predicted = job.table.predict({gid: int(np.asarray(mask).sum()) for gid, mask in keep.items()})
    measured = measured_ratio(job.dense, pruned, job.table)
    result = {"target": target, "predicted": predicted, "measured": measured, "batch": job.table.batch,
              "threads": job.table.threads, "met": measured <= target * (1 + LATENCY_SLACK)}
    job.log(latency_text(result))
    return result


def _complete_keep(analysis, masks):
    """Groups the optimizer did not handle keep everything; never cut a whole group."""
    keep = keep_all(analysis.prunable)
    for gid, mask in masks.items():
        if gid in keep and np.asarray(mask).any():
            keep[gid] = np.asarray(mask, bool)
    return keep


def _verify_on_data(trained_model, pruned, dataset, options, batch_size, gone=None):
    """DESIGN.md §5 on real batches: the cut model against the trained one, on their outputs and the arguments
    of the bounded ops that make them (verify.outputs_and_arguments). Inputs a cut changes (a KV cache,
    --allow-io-change) are fed zero where the cut channels go to the trained model, without them to the
    cut one; what it computes is compared where it survives (`gone`: groups.removed_positions)."""
    compared, floors = outputs_and_arguments(trained_model)
    # an argument an erasure removed (a residual join feeding a Sigmoid output) is not compared: its output is
    present = {o for node in pruned.graph.node for o in node.output} | {i.name for i in pruned.graph.input}
    n = len(trained_model.output_names)
    kept = [k for k, name in enumerate(compared) if k < n or name in present]
    compared, floors = [compared[k] for k in kept], [floors[k] for k in kept]
    extra = compared[n:]
    trained, pruned = graph.with_outputs(trained_model.proto, extra), graph.with_outputs(pruned, extra)
    gone = gone or {}
    names = [i.name for i in trained.graph.input]
    worst = 0.0
    total = min(options.verify_batches, -(-len(dataset) // batch_size))
    batches = progress.bar(dataset.batches(batch_size), total=total, desc="verify the cut", unit="batch")
    for k, batch in enumerate(batches):
        if k >= options.verify_batches:
            break
        zeroed, cut_feeds = io_feeds({n: batch[n] for n in names if n in batch}, gone)
        reference = kept_outputs(graph.run(trained, zeroed), compared, gone)
        scales = argument_floors(trained_model, compared, reference, floors)
        worst = max(worst, relative_difference(reference, graph.run(pruned, cut_feeds), scales))
    return worst


def _result(job, masks, history, diff, curve):
    """The result before measuring, with the settings as run; `masks` are the optimizer's, where channels
    inside an erased branch may leave a whole group (the cut keeps those through _complete_keep, the erasure
    removes them)."""
    analysis, options = job.analysis, job.options
    pruned_params, pruned_flops = analysis.predict_cost(_complete_keep(analysis, masks))
    keep = {g.id: np.asarray(masks.get(g.id, np.ones(g.num_zigs, bool)), bool) for g in analysis.prunable}
    total = sum(g.num_zigs for g in analysis.prunable)
    removed = sum(int((~m).sum()) for m in keep.values())
    return PruneResult(
        dense_model=os.fspath(job.model), pruned_model=os.fspath(job.output), keep=keep,
        group_sparsity=removed / total if total else 0.0, target_sparsity=options.target_sparsity,
        target_flops=options.target_flops,
        dense={"params": int(analysis.params), "flops": int(analysis.flops)},
        pruned={"params": int(pruned_params), "flops": int(pruned_flops)},
        verified=diff <= TOLERANCE, max_rel_diff=diff, history=history, metric=job.metric,
        groups=[{"id": g.id, "layer": g.layer, "channels": g.num_zigs, "kept": int(keep[g.id].sum())}
                for g in analysis.prunable],
        settings={**options.resolved(job.loss.form, job.comm.size), "round_to": job.round_to,
                  "narrow_widths": job.narrow},
        trace=curve[0], schedule=curve[1])


def _default_output(model):
    root, _ = os.path.splitext(os.fspath(model))
    return f"{root}.pruned.onnx"


def _check_output(output):
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise OptionError(f"-o {output}: folder {folder} does not exist")
