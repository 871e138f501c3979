"""Loss blocks added on top of the model for onnxruntime's artifact builder (imported in the builder's process)."""
import numpy as np
import onnx
from onnx import numpy_helper

from onnxoto.train import ort

blocks = ort.onnxblock.blocks


class SpecLoss(ort.onnxblock.Block):
    """The loss a `LossSpec` describes.

    cross_entropy: SoftmaxCrossEntropyLoss of one (N, C) output against int64 labels (N,).
    mse / distill: sum over outputs of weight * mean((output - target)^2); each target is
    a new graph input shaped like its output but with free dims, so that a (1, ..., 1)
    placeholder can stand in for it when only the outputs are wanted.
    """

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec

    def build(self, *graph_outputs):
        outputs, targets = self.spec["outputs"], self.spec["targets"]
        if self.spec["kind"] == "cross_entropy":
            return ort.onnxblock.loss.CrossEntropyLoss()(outputs[0], labels_name=targets[0])
        total = None
        for i, (output, target, weight) in enumerate(zip(outputs, targets, self.spec["weights"])):
            self._add_free_input_like(output, target)
            term = blocks.ReduceMean(keepdims=False)(blocks.Pow(2.0)(blocks.Sub()(output, target)))
            if weight != 1.0:
                name = f"onnxoto_loss_weight_{i}"
                self.base.graph.initializer.append(numpy_helper.from_array(np.array(weight, np.float32), name))
                term = blocks.Mul()(term, name)
            total = term if total is None else blocks.Add()(total, term)
        return total

    def _add_free_input_like(self, output: str, target: str) -> None:
        like = next(o for o in self.base.graph.output if o.name == output)
        shape = None  # unknown rank stays unknown
        if like.type.tensor_type.HasField("shape"):
            shape = [f"{target}_dim{i}" for i in range(len(like.type.tensor_type.shape.dim))]
        self.base.graph.input.append(onnx.helper.make_tensor_value_info(target, like.type.tensor_type.elem_type, shape))
