"""Cost model: parameters and FLOPs (multiply-accumulates for Conv/ConvTranspose/Gemm/MatMul,
one operation per output element for every other op), from tensor shapes alone."""
from ..ops import FLOAT_TYPES, numel, spec_of


def node_flops(node, shapes, is_float=lambda name: True):
    """FLOPs of one node; 0 when its shapes are unknown. Integer outputs (shape arithmetic) cost nothing."""
    def shape(name):
        s = shapes.get(name)
        if s is None:
            raise KeyError(name)
        return s
    try:
        spec = spec_of(node)
        if spec is not None and spec.flops is not None:
            return spec.flops(node, shape)
        return sum(numel(shape(o)) for o in node.output if o and is_float(o))
    except (KeyError, IndexError):
        return 0


def model_cost(model, shapes=None):
    """(params, flops) of a normalized Model; `shapes` overrides its shapes (a predicted cut)."""
    shapes = model.shapes if shapes is None else shapes
    params = sum(numel(shapes[t.name]) for t in model.graph.initializer if t.data_type in FLOAT_TYPES)
    flops = sum(node_flops(node, shapes, model.is_float) for node in model.graph.node)
    return params, flops
