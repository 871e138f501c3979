"""`onnxoto prune` end to end: load, analyze, train with a sparse optimizer, cut, certify, save."""
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from .. import dist, graph, groups, progress
from ..groups import keep_all
from ..errors import ModelError, OptionError
from ..report.measure import profile, session as measure_session
from ..optim import SGD, AdamW, Dhspg, Hesso, HessoCric
from ..surgery import cut
from ..train import (TrainingSession, check_recalibration, load_data, loss_for, prepare_for_training,
                     recalibrate_batchnorm, trainable_params)
from ..train.device import check_cuda
from ..train.forms import to_trainable
from ..verify import relative_difference, run as run_model
from ..verify.certify import TOLERANCE, scale_floors
from . import provenance
from .evaluate import evaluate, metric_kind, session_model, training_model
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


def prune(model, data, output=None, val=None, options=None, workdir=None, resume=False, log=print, comm=None,
          **overrides):
    """Train `model` (a path) on `data` with a sparse optimizer and write the cut model to `output`."""
    options = override(options or PruneOptions(), **overrides)
    if options.device == "cuda":
        check_cuda()
    comm = comm or dist.communicator(options.device)  # one process: a no-op
    log = log if comm.is_root else (lambda line: None)
    output = output or _default_output(model)
    _check_output(output)
    dense = graph.load(model, strict=True)
    analysis = groups.analyze(dense)
    source, presharded = dist.source_for(data, comm)
    dataset = load_data(source, dense.proto)  # after training, rank 0 verifies and times on all of it
    val_set = load_data(val, dense.proto) if val is not None else None
    choice = options.loss_choice
    if choice is not None and choice.class_labels and not (
            dataset.has_labels and np.issubdtype(dataset.labels.dtype, np.integer)):
        raise OptionError(f"--loss {options.loss} needs integer class labels in {data}")
    # the KL term's factor: with cross-entropy beside it, the distillation weight
    weights = [options.distill_weight] if choice is not None and choice.class_labels and choice.teacher else None
    loss = loss_for(dense.proto, kind=choice, labels=dataset.labels, temperature=options.temperature,
                    weights=weights)
    metric = metric_kind(val_set, loss.form)
    keep_work = workdir is not None
    workdir = workdir or tempfile.mkdtemp(prefix="onnxoto-prune-")
    os.makedirs(workdir, exist_ok=True)
    try:
        teacher = measure_session(dense.proto)
        shard = dist.shard(dataset, comm, options.batch_size, presharded)  # this rank's part of each batch
        trace = []
        trained, opt, history = _train(dense, analysis, shard, loss, options, workdir, teacher, resume, log, comm,
                                       val_set, metric, trace)
        masks = opt.keep_masks()
        keep = _complete_keep(analysis, masks)
        if not comm.is_root:  # rank 0 alone cuts, certifies, writes and measures
            result = _result(model, output, dense, analysis, masks, options, history, float("nan"), metric)
            result.is_root = False
            return result
        erased = [u for u in analysis.erasable if u.id in masks and not masks[u.id].any()]
        # a branch inside another erased branch goes with it: the outer one is reported
        erased = [u for u in erased if not any(set(u.nodes) < set(v.nodes) for v in erased)]
        trained_model = graph.Model.from_proto(trained, dense.name)
        pruned = cut(trained_model, analysis.groups, keep, erased)
        # the certificate compares with the trained model itself: this also proves its zeros are exact
        floors = scale_floors(trained_model, trained_model.output_names)
        diff = _verify_on_data(trained, pruned, dataset, options, floors)
        if diff > TOLERANCE:
            raise ModelError(f"the cut model differs from the trained one by {diff:.3g} (> {TOLERANCE}): "
                             "please report this model")
        result = _result(model, output, dense, analysis, masks, options, history, diff, metric)
        result.settings = options.resolved(loss.form, comm.size)
        result.trace, result.schedule = trace, _schedule(opt, shard, options)
        _save_atomically(provenance.stamp(pruned, model, result.settings, result.groups, diff), output)
        result.erased = [{"id": u.id, "nodes": u.nodes, "params": u.param_count, "flops": u.flops,
                          "flops_share": u.flops / analysis.flops if analysis.flops else 0.0} for u in erased]
        sample = next(dataset.batches(options.batch_size))
        result.dense.update(profile(model, batch=options.batch_size, sample=sample))
        result.pruned.update(profile(output, batch=options.batch_size, sample=sample))
        reference = session_model(teacher)
        result.dense["metric"] = evaluate(reference, val_set, metric, reference)
        result.pruned["metric"] = evaluate(session_model(measure_session(pruned)), val_set, metric, reference)
        return result
    finally:
        if not keep_work:
            shutil.rmtree(workdir, ignore_errors=True)


def _train(dense, analysis, dataset, loss, options, workdir, teacher, resume, log, comm, val_set=None, metric=None,
           trace=None):
    """Returns (trained ModelProto, optimizer, history)."""
    batchnorm = options.batchnorm_mode(comm.size)
    if batchnorm == "batch":
        check_recalibration(dense.proto)
    # operators onnxruntime-training cannot differentiate train in equivalent forms (train.forms)
    prepared, param_map = to_trainable(prepare_for_training(dense.proto, batchnorm))
    # read on the original graph: in the prepared one, BatchNorm's running statistics feed the affine
    # rewrite and would look trainable. Scalars are the graph's own constants (1/255, GELU's 0.5).
    trainable = [n for n in trainable_params(dense.proto) if int(np.prod(dense.shapes[n])) > 1]
    zig_groups = optimizer_groups(analysis, trainable, options.round_to)
    if options.erase:
        zig_groups += unit_groups(analysis, trainable)
    if not zig_groups:
        raise ModelError(f"{dense.name}: no prunable group (run `onnxoto analyze` to see why)")
    zig_groups = in_training_layout(zig_groups, param_map)
    steps = options.epochs * -(-len(dataset) // options.batch_size)
    with TrainingSession(prepared, loss, workdir=os.path.join(workdir, "artifacts"), device=options.device,
                         requires_grad=param_map.training_params(trainable), model_name=dense.name,
                         batchnorm=batchnorm) as session:
        export = lambda batches=RECALIBRATION_BATCHES: _export(dense, session, param_map, dataset,  # noqa: E731
                                                               options.batch_size, batchnorm, batches)
        lr = options.learning_rate(loss.form)
        base = SGD(lr=lr, momentum=0.9) if options.base == "sgd" else AdamW(lr=lr)
        kwargs = dict(total_steps=steps, target_sparsity=options.target_sparsity, target_flops=options.target_flops,
                      total_flops=analysis.flops, erase_fraction=options.erase, saliency_scope=options.saliency_scope,
                      flops_fn=lambda keep: analysis.predict_cost(_complete_keep(analysis, keep))[1], **options.extra)
        if options.optimizer == "hesso-cric":
            probe = next(dataset.batches(options.batch_size))
            probe_target = targets_for(probe, session, teacher)
            rows = len(probe[session.input_names[0]])  # CRIC's loss: the probe batch's, over all ranks
            # on batch statistics, the loss training sees is the training graph's (the gradients it also
            # computes are not read: the step that asks for this loss has applied its own already)
            measure = session.train_step if batchnorm == "batch" else session.eval_loss
            kwargs["loss_fn"] = lambda: comm.mean(measure(model_inputs(probe, session), probe_target), weight=rows)
        opt = OPTIMIZER_CLASSES[options.optimizer](session.params, zig_groups, base, **kwargs)
        on_epoch = None
        if val_set is not None and comm.is_root:
            on_epoch = lambda: {"val_metric": evaluate(_model_so_far(session, batchnorm, export),  # noqa: E731
                                                       val_set, metric, session_model(teacher))}
        history = train(session, opt, dataset, options, workdir, teacher, resume, log, comm=comm, on_epoch=on_epoch,
                        trace=trace)
        trained = export()
    return trained, opt, history


def _schedule(opt, dataset, options):
    """When the optimizer pruned, in steps, for the report's curve."""
    per_epoch = -(-len(dataset) // options.batch_size)
    return {"start": opt.schedule.start, "end": opt.schedule.end, "periods": opt.schedule.periods,
            "steps_per_epoch": per_epoch, "total": options.epochs * per_epoch}


def _model_so_far(session, batchnorm, export):
    """The model in training, for the epochs' metric. Eval mode normalizes by the running statistics,
    which training on batch statistics leaves stale: then an export with recalibrated ones is measured."""
    if batchnorm == "frozen":
        return training_model(session)
    return session_model(measure_session(export(VAL_RECALIBRATION_BATCHES)))


def _export(dense, session, param_map, dataset, batch_size, batchnorm, batches):
    """The dense graph with the session's weights; trained on batch statistics, BatchNorm's running
    statistics are then recalibrated on `batches` batches of the training data."""
    trained = _with_weights(dense.proto, dict(param_map.to_original(n, w) for n, w in session.weights().items()))
    if batchnorm == "batch":
        trained = recalibrate_batchnorm(trained, dataset, batches=batches, batch_size=batch_size)
    return trained


def _with_weights(proto, weights):
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for k, init in enumerate(out.graph.initializer):
        if init.name in weights:
            array = weights[init.name].astype(numpy_helper.to_array(init).dtype).reshape(tuple(init.dims))
            out.graph.initializer[k].CopyFrom(numpy_helper.from_array(array, init.name))
    return out


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
        worst = max(worst, relative_difference(run_model(trained, feeds), run_model(pruned, feeds), floors))
    return worst


def _result(model, output, dense, analysis, masks, options, history, diff, metric):
    """The result before measuring; `masks` are the optimizer's, where channels inside an erased
    branch may leave a whole group (the cut keeps those through _complete_keep, the erasure removes them)."""
    pruned_params, pruned_flops = analysis.predict_cost(_complete_keep(analysis, masks))
    keep = {g.id: np.asarray(masks.get(g.id, np.ones(g.num_zigs, bool)), bool) for g in analysis.prunable}
    total = sum(g.num_zigs for g in analysis.prunable)
    removed = sum(int((~m).sum()) for m in keep.values())
    return PruneResult(
        dense_model=os.fspath(model), pruned_model=os.fspath(output), keep=keep,
        group_sparsity=removed / total if total else 0.0, target_sparsity=options.target_sparsity,
        target_flops=options.target_flops,
        dense={"params": int(analysis.params), "flops": int(analysis.flops)},
        pruned={"params": int(pruned_params), "flops": int(pruned_flops)},
        verified=diff <= TOLERANCE, max_rel_diff=diff, history=history, metric=metric,
        groups=[{"id": g.id, "layer": g.layer, "channels": g.num_zigs, "kept": int(keep[g.id].sum())}
                for g in analysis.prunable])


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
