"""Loss blocks added on top of the model for onnxruntime's artifact builder (imported in the builder's process)."""
import numpy as np
import onnx
from onnx import numpy_helper

from ..graph import default_opset
from . import ort
from .kinds import loss_named

blocks = ort.onnxblock.blocks


class SpecLoss(ort.onnxblock.Block):
    """The loss a `LossSpec` describes.

    cross_entropy: SoftmaxCrossEntropyLoss of one (N, C) output against int64 labels (N,).
    cross_entropy+distill: that, plus weight * T^2 * KL(softmax(teacher / T) || softmax(output / T)),
    summed over classes and averaged over rows (Hinton et al.'s distillation; T^2 keeps the term's
    gradient on the scale of the cross-entropy's). Targets: the labels, then the teacher's logits.
    mse / distill: sum over outputs of weight * mean((output - target)^2); each target is
    a new graph input shaped like its output but with free dims, so that a (1, ..., 1)
    placeholder can stand in for it when only the outputs are wanted.
    """

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec

    def build(self, *graph_outputs):
        outputs, targets = self.spec["outputs"], self.spec["targets"]
        form = loss_named(self.spec["kind"])
        if form.class_labels:
            ce = ort.onnxblock.loss.CrossEntropyLoss()(outputs[0], labels_name=targets[0])
            if not form.teacher:
                return ce
            self._add_free_input_like(outputs[0], targets[1])
            kl = self._softened_kl(outputs[0], targets[1], self.spec["temperature"])
            return blocks.Add()(ce, blocks.Mul()(kl, self._constant("weight", self.spec["weights"][0])))
        total = None
        for i, (output, target, weight) in enumerate(zip(outputs, targets, self.spec["weights"])):
            self._add_free_input_like(output, target)
            term = blocks.ReduceMean(keepdims=False)(blocks.Pow(2.0)(blocks.Sub()(output, target)))
            if weight != 1.0:
                term = blocks.Mul()(term, self._constant(f"weight_{i}", weight))
            total = term if total is None else blocks.Add()(total, term)
        return total

    def _softened_kl(self, output: str, teacher: str, temperature: float) -> str:
        """T^2 * mean over rows of sum over classes of p_t * (log p_t - log p_s), p = softmax(logits / T)."""
        inverse = self._constant("inverse_temperature", 1.0 / temperature)
        log_student = self._node("LogSoftmax", [self._node("Mul", [output, inverse])], axis=-1)
        log_teacher = self._node("LogSoftmax", [self._node("Mul", [teacher, inverse])], axis=-1)
        pointwise = self._node("Mul", [self._node("Exp", [log_teacher]), self._node("Sub", [log_teacher, log_student])])
        per_row = self._sum_last_axis(pointwise)
        return self._node("Mul", [blocks.ReduceMean(keepdims=False)(per_row),
                                  self._constant("temperature_squared", temperature ** 2)])

    def _sum_last_axis(self, name: str) -> str:
        """ReduceSum over axis -1 without keepdims: axes an attribute before opset 13, an input from 13."""
        if default_opset(self.base) >= 13:
            return self._node("ReduceSum", [name, self._constant("last_axis", [-1], np.int64)], keepdims=0)
        return self._node("ReduceSum", [name], axes=[-1], keepdims=0)

    def _node(self, op: str, inputs: list[str], **attributes) -> str:
        output = f"onnxoto_loss_{op.lower()}_{len(self.base.graph.node)}"
        self.base.graph.node.append(onnx.helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def _constant(self, what: str, value, dtype=np.float32) -> str:
        name = f"onnxoto_loss_{what}"
        self.base.graph.initializer.append(numpy_helper.from_array(np.array(value, dtype), name))
        return name

    def _add_free_input_like(self, output: str, target: str) -> None:
        like = next(o for o in self.base.graph.output if o.name == output)
        shape = None  # unknown rank stays unknown
        if like.type.tensor_type.HasField("shape"):
            shape = [f"{target}_dim{i}" for i in range(len(like.type.tensor_type.shape.dim))]
        self.base.graph.input.append(onnx.helper.make_tensor_value_info(target, like.type.tensor_type.elem_type, shape))
