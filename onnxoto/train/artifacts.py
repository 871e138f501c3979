"""Training artifacts (training/eval graphs and checkpoint), built in a child process.

onnxruntime's gradient builder has crashed the whole process (SIGFPE) on a real
model; in a child process such a crash becomes a one-line ModelError instead.
"""
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from ..child import run_child, step
from ..errors import ModelError, OptionError
from ..graph import fresh_name, know_shapes, rowless_outputs, taken_names
from .kinds import DEFAULT_TEMPERATURE, Loss, loss_from_labels, loss_named
from .trainable import prepare_for_training, trainable_params

_INPUT_MODEL = "input_model.onnx"
_SPEC = "spec.json"
_PROBE = "probe.npz"  # a batch (model inputs and loss targets by name) for the first steps
_EXTERNAL_DATA_ABOVE = 1 << 30  # bytes; protobuf cannot serialize 2 GiB in one message


@dataclass(frozen=True)
class LossSpec:
    """Which loss, over which model outputs, against which new graph inputs (targets)."""

    kind: str  # a Loss's name (train.kinds): plain data, the builder's child process reads it as JSON
    outputs: tuple[str, ...]
    targets: tuple[str, ...]  # target input names, one per output
    weights: tuple[float, ...]  # per-output factor of the MSE terms; of the KL term with cross-entropy
    temperature: float = DEFAULT_TEMPERATURE  # cross_entropy+distill: softmax temperature of the KL term

    @property
    def form(self) -> Loss:
        """What the loss compares with (labels, the teacher's outputs)."""
        return loss_named(self.kind)


@dataclass(frozen=True)
class Artifacts:
    directory: Path
    training_model: Path
    eval_model: Path
    checkpoint: Path
    optimizer_model: Path | None
    loss: LossSpec
    model_inputs: tuple[str, ...]
    model_outputs: tuple[str, ...]
    requires_grad: tuple[str, ...]


def loss_for(model: onnx.ModelProto, kind: str | Loss | None = None, labels: np.ndarray | None = None,
             output: str | None = None, weights: list[float] | None = None,
             temperature: float = DEFAULT_TEMPERATURE) -> LossSpec:
    """The loss for `model`: from `kind` if given, else from the labels' dtype (integer: cross-entropy,
    float: MSE, none: distillation from teacher outputs over every model output).

    cross_entropy+distill: cross-entropy on the labels plus weights[0] times the KL divergence from the
    teacher's softened outputs (targets: the labels, then the teacher's logits)."""
    form = loss_from_labels(labels) if kind is None else kind if isinstance(kind, Loss) else loss_named(kind)
    graph_outputs = [o.name for o in model.graph.output]
    if output is not None and output not in graph_outputs:
        raise OptionError(f"model has no output {output!r} (outputs: {', '.join(graph_outputs)})")
    # every output, but those without rows (graph.rowless_outputs: a recurrent state 2 x batch x 128) while
    # another has them
    rowless = rowless_outputs(model)
    rowed = [o.name for o in model.graph.output if o.name not in rowless]
    outputs = (rowed or graph_outputs) if form.all_outputs else [output or graph_outputs[0]]
    taken = taken_names(model.graph)
    targets = []
    if form.class_labels:
        _check_logits(model, outputs[0])
        targets.append(fresh_name("labels", taken))
    if form.teacher:
        targets += [fresh_name("target" if form.regression else f"{name}_teacher", taken) for name in outputs]
    weights = [1.0] * len(outputs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(outputs):
        raise OptionError(f"{len(weights)} loss weights for {len(outputs)} outputs")
    if temperature <= 0:
        raise OptionError(f"distillation temperature must be positive, got {temperature}")
    return LossSpec(form.name, tuple(outputs), tuple(targets), tuple(weights), float(temperature))


def _check_logits(model: onnx.ModelProto, output: str) -> None:
    value = next(o for o in model.graph.output if o.name == output)
    tensor = value.type.tensor_type
    if tensor.HasField("shape") and len(tensor.shape.dim) != 2:
        raise OptionError(f"cross-entropy needs (N, C) logits, but output {output!r} has rank {len(tensor.shape.dim)}")


def build_artifacts(model: onnx.ModelProto, loss: LossSpec, directory: str | os.PathLike,
                    requires_grad: list[str] | None = None, model_name: str | None = None,
                    optimizer: bool = False, timeout: float | None = None, batchnorm: str = "frozen",
                    probe: dict[str, np.ndarray] | None = None, device: str = "cpu") -> Artifacts:
    """Write training_model.onnx, eval_model.onnx and checkpoint (and optimizer_model.onnx, an SGD
    graph we never run, if `optimizer`) into `directory`, building them in a child process.
    `batchnorm`: how BatchNormalization trains (trainable.BATCHNORM_MODES). `probe`: a batch (model
    inputs and loss targets by name) on which the child also takes the first training and eval steps."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = model_name or model.graph.name or "model"
    # On the original graph: the affine form of BatchNorm makes running stats look differentiable.
    requires_grad = trainable_params(model) if requires_grad is None else list(requires_grad)
    prepared = _with_known_shapes(prepare_for_training(model, batchnorm), name)
    if not requires_grad:
        raise ModelError(f"cannot build a training graph for {name}: it has no trainable parameters")
    big = prepared.ByteSize() > _EXTERNAL_DATA_ABOVE
    onnx.save(prepared, directory / _INPUT_MODEL, save_as_external_data=big, location=_INPUT_MODEL + ".data")
    spec = {"loss": asdict(loss), "requires_grad": requires_grad, "optimizer": optimizer,
            "outputs": [o.name for o in model.graph.output], "device": device}
    (directory / _SPEC).write_text(json.dumps(spec))
    if probe is not None:
        np.savez(directory / _PROBE, **probe)
    elif (directory / _PROBE).exists():
        (directory / _PROBE).unlink()  # a resumed run's work folder
    _run_child(directory, name, timeout)
    initializers = {init.name for init in model.graph.initializer}
    return Artifacts(directory=directory, training_model=directory / "training_model.onnx",
                     eval_model=directory / "eval_model.onnx", checkpoint=directory / "checkpoint",
                     optimizer_model=directory / "optimizer_model.onnx" if optimizer else None, loss=loss,
                     model_inputs=tuple(i.name for i in model.graph.input if i.name not in initializers),
                     model_outputs=tuple(spec["outputs"]), requires_grad=tuple(requires_grad))


def _with_known_shapes(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """`model` with every size onnxoto's inference finds recorded for the gradient builder. Where its own
    inference cannot size a tensor (an Expand or Reshape to a run-time target), onnxruntime-training names
    the size with a fresh symbol and takes two different symbols as equal, so the gradient of a broadcast
    over that tensor is not reduced: magika's softmax got an (N, 214) gradient for its (N, 1) maximum."""
    try:
        return know_shapes(model, name)
    except ModelError:  # the training forms' graph as onnxruntime sees it: nothing recorded
        del model.graph.value_info[:]
        return model


def _run_child(directory: Path, name: str, timeout: float | None) -> None:
    run_child("onnxoto.train.artifacts:generate_here", directory, f"cannot train {name}", timeout)


def generate_here(directory: str) -> None:
    """Build the artifacts in this process (the child's side of build_artifacts); then, given a probe
    batch, take the first training and eval steps on it, where a crash of onnxruntime costs nothing."""
    from . import ort
    from .losses import SpecLoss

    os.chdir(directory)  # onnxblock writes its temporary model into the working directory
    spec = json.loads(Path(_SPEC).read_text())
    step("building the training graph")
    # A path makes onnxblock round-trip through external data (needed past 2 GiB only; it
    # failed on a 0.4 MB ResNet: "temp.onnx.data ... doesn't exist"), so small models go in memory.
    big = Path(_INPUT_MODEL + ".data").exists()
    ort.artifacts.generate_artifacts(
        _INPUT_MODEL if big else onnx.load(_INPUT_MODEL), requires_grad=spec["requires_grad"], frozen_params=[],
        loss=SpecLoss(spec["loss"]), optimizer=ort.artifacts.OptimType.SGD if spec["optimizer"] else None,
        artifact_directory=".", additional_output_names=spec["outputs"])
    if Path(_PROBE).exists():
        _first_steps(ort, spec.get("device", "cpu"))


def _first_steps(ort, device: str) -> None:
    """One training step and one eval step on the probe batch (the first steps of a run)."""
    state = ort.CheckpointState.load_checkpoint("checkpoint")
    module = ort.Module("training_model.onnx", state, "eval_model.onnx", device=device)
    with np.load(_PROBE, allow_pickle=False) as data:
        feeds = [np.ascontiguousarray(data[name]) for name in module.input_names()]
    rows = len(feeds[0]) if feeds and np.ndim(feeds[0]) else 1
    step(f"taking a first training step on {rows} rows")
    module.train()
    module(*feeds)
    step(f"taking a first eval step on {rows} rows")
    module.eval()
    module(*feeds)
