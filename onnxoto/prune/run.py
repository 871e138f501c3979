"""`onnxoto prune` end to end: load, analyze, train with a sparse optimizer, cut, certify, save."""
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np
import onnx

from .. import dist, graph, groups, progress
from ..groups import keep_all
from ..errors import ModelError, OptionError
from ..report import profile
from ..optim import SGD, AdamW, Dhspg, Hesso, HessoCric
from ..surgery import cut
from ..train import (TrainingSession, check_cuda, check_recalibration, load_data, loss_for, prepare_for_training,
                     recalibrate_batchnorm, to_trainable, trainable_params)
from ..verify import TOLERANCE, relative_difference, scale_floors
from . import provenance
from .metric import evaluate, metric_kind, session_model, training_model
from .loop import model_inputs, targets_for, train
from .options import PruneOptions, override
from .zigs import in_training_layout, optimizer_groups, unit_groups

OPTIMIZER_CLASSES = {"hesso": Hesso, "hesso-cric": HessoCric, "dhspg": Dhspg}
RECALIBRATION_BATCHES = 100  # BatchNorm statistics of the written model: 6,400 samples at batch 64
VAL_RECALIBRATION_BATCHES = 20  # those of the epochs' validation metric: cheaper, close enough to compare epochs


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
    trace: list = field(default_factory=list)  # [step, loss, group sparsity] every few steps
    schedule: dict = field(default_factory=dict)  # the pruning phase in steps: start, end, periods, total


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
    comm: object
    log: object


def prune(model, data, output=None, val=None, options=None, workdir=None, resume=False, log=print, comm=None,
          **overrides):
    """Train `model` (a path) on `data` with a sparse optimizer and write the cut model to `output`."""
    options = override(options or PruneOptions(), **overrides)
    if options.device == "cuda":
        check_cuda()
    comm = comm or dist.communicator(options.device)  # one process: a no-op
    job = _load(model, data, output or _default_output(model), val, options, comm,
                log if comm.is_root else (lambda line: None))
    keep_work = workdir is not None
    workdir = workdir or tempfile.mkdtemp(prefix="onnxoto-prune-")
    os.makedirs(workdir, exist_ok=True)
    try:
        trained, masks, history, curve = _train(job, workdir, resume)
        if not comm.is_root:  # rank 0 alone cuts, certifies, writes and measures
            result = _result(job, masks, history, float("nan"), curve)
            result.is_root = False
            return result
        erased = _erased(job.analysis, masks)
        pruned, diff = _cut_and_certify(job, trained, masks, erased)
        result = _result(job, masks, history, diff, curve)
        _save_atomically(provenance.stamp(pruned, job.model, result.settings, result.groups, diff), job.output)
        return _measured(result, job, pruned, erased)
    finally:
        if not keep_work:
            shutil.rmtree(workdir, ignore_errors=True)


def _load(model, data, output, val, options, comm, log):
    """Everything the run reads, loaded and checked before any work: model, groups, data, loss."""
    _check_output(output)
    dense = graph.load(model, strict=True)
    analysis = groups.analyze(dense)
    source, presharded = dist.source_for(data, comm)
    dataset = load_data(source, dense.proto)
    val_set = load_data(val, dense.proto) if val is not None else None
    loss = _loss(dense, dataset, options, data)
    return Job(model=model, output=output, dense=dense, analysis=analysis, dataset=dataset,
               shard=dist.shard(dataset, comm, options.batch_size, presharded), val=val_set, loss=loss,
               metric=metric_kind(val_set, loss.form), teacher=graph.session(dense.proto), options=options,
               comm=comm, log=log)


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
    with TrainingSession(prepared, job.loss, workdir=os.path.join(workdir, "artifacts"), device=options.device,
                         requires_grad=param_map.training_params(trainable), model_name=job.dense.name,
                         batchnorm=batchnorm) as session:
        export = functools.partial(_export, job, session, param_map, batchnorm)
        opt = _optimizer(job, session, zig_groups, batchnorm)
        on_epoch = None
        if job.val is not None and comm.is_root:
            on_epoch = lambda: {"val_metric": evaluate(_model_so_far(session, batchnorm, export),  # noqa: E731
                                                       job.val, job.metric, session_model(job.teacher))}
        trace = []
        history = train(session, opt, job.shard, options, workdir, job.teacher, resume, job.log, comm=comm,
                        on_epoch=on_epoch, trace=trace)
        trained = export()
    return trained, opt.keep_masks(), history, (trace, _schedule(opt, job))


def _schedule(opt, job):
    """When the optimizer pruned, in steps, for the report's curve."""
    per_epoch = -(-len(job.shard) // job.options.batch_size)
    return {"start": opt.schedule.start, "end": opt.schedule.end, "periods": opt.schedule.periods,
            "steps_per_epoch": per_epoch, "total": job.options.epochs * per_epoch}


def _training_graph(dense, batchnorm):
    """(the training graph, its ParamMap, the names of the dense model's trainable parameters)."""
    if batchnorm == "batch":
        check_recalibration(dense.proto)
    # operators onnxruntime-training cannot differentiate train in equivalent forms (train.forms)
    prepared, param_map = to_trainable(prepare_for_training(dense.proto, batchnorm))
    # read on the original graph: in the prepared one, BatchNorm's running statistics feed the affine
    # rewrite and would look trainable. Scalars are the graph's own constants (1/255, GELU's 0.5).
    trainable = [n for n in trainable_params(dense.proto) if int(np.prod(dense.shapes[n])) > 1]
    return prepared, param_map, trainable


def _optimizer_groups(job, trainable, param_map):
    """The analysis' prunable groups (and erasable branches, with --erase) over the training graph."""
    zig_groups = optimizer_groups(job.analysis, trainable, job.options.round_to)
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
                  flops_fn=lambda keep: analysis.predict_cost(_complete_keep(analysis, keep))[1], **options.extra)
    if options.optimizer == "hesso-cric":
        kwargs["loss_fn"] = _probe_loss(job, session, batchnorm)
    return OPTIMIZER_CLASSES[options.optimizer](session.params, zig_groups, base, **kwargs)


def _probe_loss(job, session, batchnorm):
    """CRIC's loss: the first batch's, over all ranks. On batch statistics the loss training sees is the
    training graph's (the gradients it also computes are not read: the step that asks for this loss has
    applied its own already)."""
    probe = next(job.shard.batches(job.options.batch_size))
    target = targets_for(probe, session, job.teacher)
    rows = len(probe[session.input_names[0]])
    measure = session.train_step if batchnorm == "batch" else session.eval_loss
    return lambda: job.comm.mean(measure(model_inputs(probe, session), target), weight=rows)


def _model_so_far(session, batchnorm, export):
    """The model in training, for the epochs' metric. Eval mode normalizes by the running statistics,
    which training on batch statistics leaves stale: then an export with recalibrated ones is measured."""
    if batchnorm == "frozen":
        return training_model(session)
    return session_model(graph.session(export(VAL_RECALIBRATION_BATCHES)))


def _export(job, session, param_map, batchnorm, batches=RECALIBRATION_BATCHES):
    """The dense graph with the session's weights; trained on batch statistics, BatchNorm's running
    statistics are then recalibrated on `batches` batches of the training data."""
    weights = dict(param_map.to_original(n, w) for n, w in session.weights().items())
    trained = graph.with_initializers(job.dense.proto, weights)
    if batchnorm == "batch":
        trained = recalibrate_batchnorm(trained, job.shard, batches=batches, batch_size=job.options.batch_size)
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
    floors = scale_floors(trained_model, trained_model.output_names)
    diff = _verify_on_data(trained, pruned, job.dataset, job.options, floors)
    if diff > TOLERANCE:
        raise ModelError(f"the cut model differs from the trained one by {diff:.3g} (> {TOLERANCE}): "
                         "please report this model")
    return pruned, diff


def _measured(result, job, pruned, erased):
    """The result with the erased branches, and both models' latency and metric."""
    options, analysis = job.options, job.analysis
    result.erased = [{"id": u.id, "nodes": u.nodes, "params": u.param_count, "flops": u.flops,
                      "flops_share": u.flops / analysis.flops if analysis.flops else 0.0} for u in erased]
    sample = next(job.dataset.batches(options.batch_size))
    result.dense.update(profile(job.model, batch=options.batch_size, sample=sample))
    result.pruned.update(profile(job.output, batch=options.batch_size, sample=sample))
    reference = session_model(job.teacher)
    result.dense["metric"] = evaluate(reference, job.val, job.metric, reference)
    result.pruned["metric"] = evaluate(session_model(graph.session(pruned)), job.val, job.metric, reference)
    return result


def _complete_keep(analysis, masks):
    """Groups the optimizer did not handle keep everything; never cut a whole group."""
    keep = keep_all(analysis.prunable)
    for gid, mask in masks.items():
        if gid in keep and np.asarray(mask).any():
            keep[gid] = np.asarray(mask, bool)
    return keep


def _verify_on_data(trained, pruned, dataset, options, floors):
    """DESIGN.md §5 on real batches: the cut model against the trained one."""
    names = [i.name for i in trained.graph.input]
    worst = 0.0
    total = min(options.verify_batches, -(-len(dataset) // options.batch_size))
    batches = progress.bar(dataset.batches(options.batch_size), total=total, desc="verify the cut", unit="batch")
    for k, batch in enumerate(batches):
        if k >= options.verify_batches:
            break
        feeds = {n: batch[n] for n in names if n in batch}
        worst = max(worst, relative_difference(graph.run(trained, feeds), graph.run(pruned, feeds), floors))
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
        settings=options.resolved(job.loss.form, job.comm.size), trace=curve[0], schedule=curve[1])


def _default_output(model):
    root, _ = os.path.splitext(os.fspath(model))
    return f"{root}.pruned.onnx"


def _check_output(output):
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise OptionError(f"-o {output}: folder {folder} does not exist")


def _save_atomically(proto, output):
    """Write to a temporary file beside the target, then rename: never a half-written model."""
    folder = os.path.dirname(os.path.abspath(output))
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=folder)
    os.close(fd)
    try:
        onnx.save(proto, tmp)
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
