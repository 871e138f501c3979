"""The training loop: shuffled batches, the sparse optimizer's step in place, checkpoints to resume from."""
import math
import os

import numpy as np

from .. import graph, progress
from ..dist import Communicator, param_checksum
from ..errors import OnnxotoError
from ..train import LABELS, Dataset
from .clock import Clock

CHECKPOINT = "checkpoint.npz"
TEACHER = "onnxoto.teacher:"  # dataset key prefix of the teacher's outputs, computed once
TEACHER_CACHE_BYTES = 512 << 20  # past this the teacher runs at every step instead
TRACE_POINTS = 1000  # about this many (step, loss, group sparsity) points per run, for the report's curve


class TrainingStopped(OnnxotoError):
    """Training could not go on (a NaN loss); the last good checkpoint is kept."""


def targets_for(batch, loss, teacher):
    """What the loss (a LossSpec) compares the outputs with: the labels, the original model's outputs, or both."""
    form = loss.form
    outputs = []
    if form.teacher:
        outputs = [batch.get(TEACHER + name) for name in loss.outputs]
        if any(output is None for output in outputs):
            outputs = teacher_outputs(batch, teacher, loss.outputs)
    return form.targets(batch[LABELS] if form.class_labels else None, outputs)


def teacher_outputs(batch, teacher, names):
    inputs = [i.name for i in teacher.get_inputs()]
    return teacher.run(list(names), {n: batch[n] for n in inputs})


def with_teacher_outputs(dataset, loss, teacher, batch_size):
    """`dataset` plus the teacher's outputs of every sample (keys TEACHER + output name), computed once
    rather than at every step of every epoch; `dataset` itself for a loss without a teacher, or when they would
    take more than TEACHER_CACHE_BYTES (then targets_for runs the teacher per batch)."""
    if not loss.form.teacher or teacher is None:
        return dataset
    batches = dataset.batches(batch_size)
    first = teacher_outputs(next(batches), teacher, loss.outputs)
    rows = min(batch_size, len(dataset))
    if any(o.ndim == 0 or len(o) != rows for o in first):
        return dataset  # an output not batch-major (time-major [T, N, C]) cannot be cut into rows
    if sum(o.nbytes for o in first) / max(len(first[0]), 1) * len(dataset) > TEACHER_CACHE_BYTES:
        return dataset
    parts = [first] + [teacher_outputs(batch, teacher, loss.outputs) for batch in batches]
    outputs = {TEACHER + name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(loss.outputs)}
    return Dataset({**dataset.arrays, **outputs}, dataset.labels, dataset.source, dataset.constants)


def model_inputs(batch, session):
    return {n: batch[n] for n in session.input_names}


def epoch_batches(dataset, batch_size, seed, epoch):
    """The same shuffled order for an epoch whether or not the run was resumed."""
    return dataset.batches(batch_size, shuffle=True, rng=np.random.default_rng([seed, epoch]))


def train(session, optimizer, dataset, options, workdir, teacher=None, resume=False, log=None, history=None,
          comm=None, on_epoch=None, clock=None, trace=None):
    """Run every step; returns the history of per-epoch records. Checkpoints go to workdir (from rank 0).

    on_epoch(): extra numbers for the epoch's record (the validation metric). clock: times the phases.
    trace: a list that gets [step, loss, group sparsity] every few steps (TRACE_POINTS per run)."""
    comm = comm or Communicator()
    clock = clock or Clock()
    steps_per_epoch = math.ceil(len(dataset) / options.batch_size)
    base_lr = options.learning_rate(session.loss.form)
    history = history if history is not None else []
    trace = trace if trace is not None else []
    stride = max(1, options.epochs * steps_per_epoch // TRACE_POINTS)
    start_epoch, skip = 0, 0
    if resume:
        start_epoch, skip, history = load_checkpoint(workdir, session, optimizer, trace)
    log = log or (lambda line: None)
    position = (start_epoch, skip)  # where a resumed run starts: (epoch, steps of it already done)
    try:
        for epoch in range(start_epoch, options.epochs):
            losses = []
            desc = f"epoch {epoch + 1}/{options.epochs}"
            with progress.bar(total=steps_per_epoch, desc=desc, hidden=not comm.is_root) as bar:
                for step, batch in enumerate(epoch_batches(dataset, options.batch_size, options.seed, epoch)):
                    if epoch == start_epoch and step < skip:
                        bar.update()
                        continue
                    with clock.phase("training steps"):
                        loss = train_step(session, batch, teacher, comm)
                    if not math.isfinite(loss):
                        raise TrainingStopped(f"loss became {loss} at epoch {epoch + 1} step {step + 1}: lower "
                                              "--lr (with --report DIR the last good checkpoint is kept there)")
                    optimizer.base.lr = learning_rate(base_lr, options.lr_decay and optimizer.schedule.end,
                                                      epoch * steps_per_epoch + step,
                                                      options.epochs * steps_per_epoch)
                    with clock.phase("training steps"):
                        optimizer.step(session.grads)
                    losses.append(loss)
                    position = (epoch, step + 1)
                    _show(bar, loss, optimizer.metrics())
                    at = epoch * steps_per_epoch + step
                    if at % stride == 0:
                        trace.append([at, loss, optimizer.metrics().get("group_sparsity", 0.0)])
            with clock.phase("validation"):
                validation = on_epoch() if on_epoch else {}
            record = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
                      **optimizer.metrics(), **validation}
            history.append(record)
            position = (epoch + 1, 0)
            comm.check_same(param_checksum(session.params))
            if comm.is_root:
                with clock.phase("checkpoints"):
                    save_checkpoint(workdir, session, optimizer, *position, history, trace)
            val = f", val {record['val_metric']:.4f}" if record.get("val_metric") is not None else ""
            if record.get("latency_measured") is not None:  # --target-latency, timed here
                val = f", latency {record['latency_measured']:.3f} of dense (measured){val}"
            log(f"epoch {epoch + 1}/{options.epochs}: loss {record['loss']:.4f}, "
                f"group sparsity {record.get('group_sparsity', 0):.3f}{val}")
    except KeyboardInterrupt:
        if comm.is_root:
            save_checkpoint(workdir, session, optimizer, *position, history, trace)
        raise TrainingStopped(f"interrupted: resume with --resume {workdir}") from None
    except BaseException:
        comm.fail()  # the other ranks must not wait on this one
        raise
    return history


def learning_rate(lr, decay_from, step, total):
    """Constant through warm-up and pruning, then (decay_from: the pruning phase's end) a cosine decay to
    zero over the fine-tuning: a trained model is left where its own training left it, at a small rate."""
    if not decay_from or step < decay_from:
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * (step - decay_from) / max(1, total - decay_from)))


def train_step(session, batch, teacher, comm):
    """Forward/backward on this rank's rows of the batch; with several ranks, the gradients (in place) and
    the loss are then averaged over ranks, weighted by rows: the global batch's mean, as in one process."""
    rows = graph.row_count({n: batch[n] for n in session.input_names}, getattr(session, "whole_inputs", frozenset()))
    if rows:
        loss = session.train_step(model_inputs(batch, session), targets_for(batch, session.loss, teacher))
    else:  # a last global batch smaller than the world: this rank adds nothing
        loss = 0.0
        for grad in session.grads.values():
            grad[...] = 0
    if comm.size == 1:
        return loss
    (loss,) = comm.allreduce_mean(session.grads.values(), weight=rows, scalars=(loss,))
    return loss


def _show(bar, loss, metrics):
    bar.update()
    bar.set_postfix_str(f"loss {loss:.4f} sparsity {metrics.get('group_sparsity', 0):.3f} "
                        f"{metrics.get('phase', '')}", refresh=False)


def save_checkpoint(workdir, session, optimizer, epoch, step, history, trace=()):
    """Parameters, optimizer state and position, atomically (no pickle: plain arrays and numbers)."""
    arrays = {f"param/{k}": v for k, v in session.weights().items()}
    for k, v in optimizer.state_dict().items():
        arrays[f"optim/{k}"] = np.asarray(v)
    arrays["position"] = np.array([epoch, step], np.int64)
    keys = sorted({k for record in history for k in record if isinstance(record[k], (int, float))})
    arrays["history_keys"] = np.array(keys)
    arrays["history"] = np.array([[float(r.get(k, np.nan) or 0.0) for k in keys] for r in history], np.float64)
    arrays["trace"] = np.array(trace, np.float64).reshape(-1, 3)
    path = os.path.join(workdir, CHECKPOINT)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_checkpoint(workdir, session, optimizer, trace=None):
    """Restores parameters and optimizer state; returns (epoch, step, history) and refills `trace`."""
    path = os.path.join(workdir, CHECKPOINT)
    if not os.path.isfile(path):
        raise OnnxotoError(f"--resume {workdir}: no checkpoint there")
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            if key.startswith("param/"):
                session.params[key[6:]][...] = data[key]
        optimizer.load_state_dict({k[6:]: _scalar(data[k]) for k in data.files if k.startswith("optim/")})
        epoch, step = (int(v) for v in data["position"])
        keys = [str(k) for k in data["history_keys"]]
        history = [dict(zip(keys, row.tolist())) for row in data["history"]]
        if trace is not None and "trace" in data.files:
            trace[:] = data["trace"].tolist()
    return epoch, step, history


def _scalar(array):
    return array.item() if array.ndim == 0 else array
