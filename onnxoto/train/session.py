"""A training session over onnxruntime-training: forward/backward, with parameters and
gradients exposed as in-place views of onnxruntime's own buffers."""
import ctypes
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx

from ..errors import DataError
from ..graph import row_count, take_rows
from . import ort
from .artifacts import Artifacts, LossSpec, build_artifacts, loss_for

_NUMPY_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def cpu_view(ortvalue) -> np.ndarray:
    """A numpy array over a CPU OrtValue's buffer: no copy; valid while the session lives."""
    dtype = np.dtype(_NUMPY_DTYPES[ortvalue.data_type()])
    shape = tuple(ortvalue.shape())
    count = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = (ctypes.c_byte * count).from_address(ortvalue.data_ptr())
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def cuda_view(ortvalue):
    """A CuPy array over a CUDA OrtValue's buffer, through DLPack. UNTESTED here (no GPU in CI)."""
    import cupy

    return cupy.from_dlpack(ortvalue.to_dlpack())


def session_options(threads: int | None = None, profile_prefix: str | None = None):
    """onnxruntime's options for a training session: `threads` intra-op threads (None: one per physical
    core, onnxruntime's default), one inter-op thread, and workers that sleep instead of spinning between
    kernels (measured on 2 shared cores: spinning workers took the cores the busy ones needed)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # the training graph transformers log at INFO
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def _named(loss: LossSpec, inputs: dict[str, np.ndarray], target) -> dict[str, np.ndarray]:
    """The training graph's feeds by name: model inputs and the loss's targets."""
    targets = [target] if isinstance(target, np.ndarray) else list(target)
    return {**dict(zip(loss.targets, targets)), **inputs}


class TrainingSession:
    """Forward/backward of `model` plus a loss; `params` and `grads` are in-place views.

    Writing into `params[name]` changes what the next step computes. `grads[name]` holds the
    gradient of the last `train_step` (reset before each step, not accumulated). onnxruntime
    allocates every gradient buffer when the session is created and reuses it for every step
    (its address was measured stable across steps and batch sizes; `train_step` checks the
    parameter and gradient addresses anyway, ~45 us for 33 parameters, and re-views a buffer
    that moved; a caller that kept an old view must re-read `params`/`grads` if `moved_buffers` grows).
    Views are invalid once the session is closed.
    """

    def __init__(self, model: onnx.ModelProto, loss: LossSpec | str | None = None, *,
                 workdir: str | os.PathLike | None = None, device: str = "cpu",
                 requires_grad: list[str] | None = None, model_name: str | None = None, batchnorm: str = "frozen",
                 threads: int | None = None, profile_prefix: str | None = None, probe: tuple | None = None):
        """probe: (inputs, target) of one batch; the first training and eval steps are taken on it in the
        child process that builds the training graph, so that onnxruntime dying on them is an error."""
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', not {device!r}")
        self.device = device
        self.threads, self.profile_prefix = threads, profile_prefix  # profile: written when the session closes
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="onnxoto-train-") if workdir is None else workdir)
        try:
            spec = loss if isinstance(loss, LossSpec) else loss_for(model, kind=loss)
            self.artifacts: Artifacts = build_artifacts(model, spec, self.workdir, requires_grad, model_name,
                                                          batchnorm=batchnorm, device=device,
                                                          probe=None if probe is None else _named(spec, *probe))
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)  # the training graph transformers log at INFO
        a = self.artifacts
        self._state = ort.CheckpointState.load_checkpoint(str(a.checkpoint))
        self._module = ort.Module(str(a.training_model), self._state, str(a.eval_model), device=self.device,
                                  session_options=session_options(self.threads, self.profile_prefix))
        self._feed_order = self._module.input_names()
        declared = {i.name: i for i in onnx.load(str(a.eval_model), load_external_data=False).graph.input}
        self._target_ranks = [len(declared[t].type.tensor_type.shape.dim) for t in a.loss.targets]
        self._parameters = {name: self._state._state.get_parameter(name) for name in a.requires_grad}
        view = cpu_view if self.device == "cpu" else cuda_view
        self._view = view
        self.params = {name: view(p.data) for name, p in self._parameters.items()}
        self.grads = {name: view(p.grad) for name, p in self._parameters.items()}
        self._grad_ptr = {name: p.grad.data_ptr() for name, p in self._parameters.items()}
        self._data_ptr = {name: p.data.data_ptr() for name, p in self._parameters.items()}
        self.moved_buffers = 0  # how many times a parameter or gradient buffer moved (measured: never)

    @property
    def loss(self) -> LossSpec:
        return self.artifacts.loss

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.artifacts.model_inputs

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.artifacts.model_outputs

    rows_per_run: int | None = None  # a model whose batch is fixed to 1 in the file runs one row at a time
    whole_inputs: frozenset = frozenset()  # inputs fed whole to every run (graph.fed_whole), never cut into rows
    row_axes: dict = {}  # with rows_per_run: outputs whose rows are on another axis than 0 (time-major)

    def train_step(self, inputs: dict[str, np.ndarray], target) -> float:
        """Forward and backward on one batch; `grads` then hold this batch's gradients. Returns the loss.

        With rows_per_run, the batch's gradients are accumulated row by row and averaged."""
        self._module.train()
        self._module.lazy_reset_grad()
        losses = []
        for part_inputs, part_target in self._parts(inputs, target):
            loss, *outputs = self._module(*self._feeds(part_inputs, part_target))
            self._check_target_shapes(part_target, outputs)
            losses.append(float(loss))
        self._refresh_moved_buffers()
        if len(losses) > 1:  # onnxruntime summed the parts' gradients: the batch's mean, as in one run
            for grad in self.grads.values():
                grad /= len(losses)
        return float(np.mean(losses))

    def eval_loss(self, inputs: dict[str, np.ndarray], target) -> float:
        """The loss on one batch, forward only, in eval mode."""
        self._module.eval()
        losses = []
        for part_inputs, part_target in self._parts(inputs, target):
            loss, *outputs = self._module(*self._feeds(part_inputs, part_target))
            self._check_target_shapes(part_target, outputs)
            losses.append(float(loss))
        return float(np.mean(losses))

    def eval_outputs(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's outputs for one batch, in eval mode (the loss is computed against placeholders)."""
        self._module.eval()
        parts = []
        for part_inputs, _ in self._parts(inputs, None):
            loss, *outputs = self._module(*self._feeds(part_inputs, self._placeholder_targets(part_inputs)))
            parts.append(outputs)
        if len(parts) == 1:
            return dict(zip(self.output_names, parts[0]))
        return {name: np.concatenate(values, axis=self.row_axes.get(name, 0))
                for name, values in zip(self.output_names, zip(*parts))}

    def _parts(self, inputs: dict[str, np.ndarray], target):
        """(inputs, target) of each run a batch takes: itself, or rows_per_run rows at a time."""
        rows = row_count({n: inputs[n] for n in self.input_names if n in inputs}, self.whole_inputs)
        if not self.rows_per_run or rows <= self.rows_per_run:
            yield inputs, target
            return
        targets = None if target is None else [target] if isinstance(target, np.ndarray) else list(target)
        axes = [0] * len(self.loss.targets)  # the labels' rows on axis 0, each teacher output's on its own
        if self.loss.form.teacher:
            axes[len(axes) - len(self.loss.outputs):] = [self.row_axes.get(n, 0) for n in self.loss.outputs]
        for start in range(0, rows, self.rows_per_run):
            part = slice(start, start + self.rows_per_run)
            sliced = None if targets is None else [np.take(t, np.arange(rows)[part], axis=a) for t, a in zip(targets, axes)]
            if sliced is not None and isinstance(target, np.ndarray):
                sliced = sliced[0]
            yield take_rows(inputs, part, self.whole_inputs), sliced

    def weights(self) -> dict[str, np.ndarray]:
        """Copies of the trained parameters, to write back into the ONNX model."""
        if self.device == "cpu":
            return {name: view.copy() for name, view in self.params.items()}
        return {name: view.get() for name, view in self.params.items()}

    def _feeds(self, inputs: dict[str, np.ndarray], target) -> list[np.ndarray]:
        targets = [target] if isinstance(target, np.ndarray) else list(target)
        if len(targets) != len(self.loss.targets):
            raise DataError(f"the {self.loss.kind} loss needs {len(self.loss.targets)} target arrays, got {len(targets)}")
        named = dict(zip(self.loss.targets, targets))
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise DataError(f"no data for model input {missing[0]!r}")
        named.update(inputs)
        return [np.ascontiguousarray(named[name]) for name in self._feed_order]

    def _check_target_shapes(self, target, outputs: list[np.ndarray]) -> None:
        if not self.loss.form.teacher:
            return  # SoftmaxCrossEntropyLoss checks the labels' shape itself
        by_name = dict(zip(self.output_names, outputs))
        targets = [target] if isinstance(target, np.ndarray) else list(target)
        if self.loss.form.class_labels:
            targets = targets[1:]  # after the labels: the teacher's outputs
        for name, array in zip(self.loss.outputs, targets):
            if array.shape != by_name[name].shape:
                raise DataError(f"target for output {name!r} has shape {array.shape}, the output {by_name[name].shape}")

    def _placeholder_targets(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        labels = []
        if self.loss.form.class_labels:
            labels = [np.zeros(len(inputs[self.input_names[0]]), np.int64)]
        # MSE and KL targets have free dims: an all-ones shape broadcasts against any output.
        return labels + [np.zeros((1,) * rank, np.float32) for rank in self._target_ranks[len(labels):]]

    def _refresh_moved_buffers(self) -> None:
        for name, parameter in self._parameters.items():
            for views, pointers, value in ((self.grads, self._grad_ptr, parameter.grad),
                                           (self.params, self._data_ptr, parameter.data)):
                if value.data_ptr() != pointers[name]:
                    views[name] = self._view(value)
                    pointers[name] = value.data_ptr()
                    self.moved_buffers += 1

    def close(self) -> None:
        """Release onnxruntime's session; the views die with it. Removes the work directory if we made it."""
        self.params, self.grads = {}, {}
        self._module = self._state = self._parameters = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "TrainingSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
