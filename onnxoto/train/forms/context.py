"""What a rewrite sees: shapes, constant values, fresh names, and a list to emit nodes into."""
import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...graph import fresh_name, static_dims, taken_names


class Unsupported(Exception):
    """This node cannot be rewritten exactly; it stays as it is (the reason is kept in ParamMap.kept)."""


class NotNeeded(Unsupported):
    """This node already trains as it is (a positive-step Slice, a constant Pad)."""


class Context:
    """Shared by every rewrite of one graph. Constants are emitted as Constant nodes, not
    initializers, so that `trainable_params` of the rewritten graph never counts them."""

    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.taken = taken_names(self.graph)
        self.constants = {}  # Constant node outputs -> value
        for node in self.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.shapes = _inferred_shapes(model)
        self.readers = {}
        for node in self.graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.nodes: list = []  # what the current rewrite emits
        self.new_initializers: list = []
        self.param_map = None  # set by to_trainable
        self.dropped_initializers: set = set()

    # -- looking things up ---------------------------------------------------------------
    def shape(self, name: str) -> tuple | None:
        """Dims of `name`: int where static, None where symbolic; None if the rank is unknown."""
        return self.shapes.get(name)

    def static_shape(self, name: str, node: onnx.NodeProto) -> tuple:
        """Dims of `name`, whose spatial dims (axis 2 on) must be static; N and C may be symbolic."""
        shape = self.shape(name)
        if shape is None or any(d is None for d in shape[2:]):
            raise Unsupported(f"needs the static shape of {name!r}, have {shape}")
        return shape

    def value(self, name: str):
        """The constant value of `name` (initializer or Constant node), or None."""
        if not name:
            return None
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        return self.constants.get(name)

    # -- making things -------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        return fresh_name(base, self.taken)

    def emit(self, op: str, inputs: list, output: str | None = None, base: str = "t", **attributes) -> str:
        """Append a node; return its (first) output name, fresh unless given."""
        output = output or self.fresh(base)
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=self.fresh(f"{base}_{op}"), **attributes))
        return output

    def const(self, array, base: str = "const") -> str:
        name = self.fresh(base)
        self.nodes.append(helper.make_node("Constant", [], [name], name=self.fresh(base + "_Constant"),
                                           value=numpy_helper.from_array(np.asarray(array), name)))
        return name

    def ints(self, values, base: str = "ints") -> str:
        return self.const(np.asarray(values, dtype=np.int64), base)

    def shape_vector(self, source: str, parts: list, base: str) -> str:
        """An int64 shape: each part an int, or (axis, factor) for dim(source, axis) * factor."""
        shape = self.shape(source) or ()
        static = []
        for part in parts:
            if isinstance(part, tuple):
                axis, factor = part
                if axis >= len(shape) or shape[axis] is None:
                    return self._dynamic_shape_vector(source, parts, base)
                static.append(shape[axis] * factor)
            else:
                static.append(part)
        return self.ints(static, base)

    def _dynamic_shape_vector(self, source: str, parts: list, base: str) -> str:
        full = self.emit("Shape", [source], base=f"{base}_shape")
        pieces = []
        for part in parts:
            if isinstance(part, tuple):
                axis, factor = part
                dim = self.emit("Gather", [full, self.ints([axis], f"{base}_axis")], base=f"{base}_dim", axis=0)
                if factor != 1:
                    dim = self.emit("Mul", [dim, self.ints([factor], f"{base}_factor")], base=f"{base}_dim")
                pieces.append(dim)
            else:
                pieces.append(self.ints([part], f"{base}_part"))
        return self.emit("Concat", pieces, base=base, axis=0)

    def add_initializer(self, array: np.ndarray, name: str) -> None:
        self.new_initializers.append(numpy_helper.from_array(array, name))
        self.taken.add(name)


def _inferred_shapes(model: onnx.ModelProto) -> dict:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a custom op or a bad graph: fall back to the shapes the model carries
        inferred = model
    shapes = {}
    graph = inferred.graph
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if static_dims(info) is not None:
            shapes[info.name] = static_dims(info)
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes
