"""Cost model: parameters and FLOPs (multiply-accumulates for Conv/ConvTranspose/Gemm/MatMul,
one operation per output element for every other op), from tensor shapes alone."""
import numpy as np
from onnx import helper

from ..graph.normalize import FLOAT_TYPES


def _numel(shape):
    return int(np.prod([d if isinstance(d, int) else 1 for d in shape])) if shape else 1


def attribute(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _conv(node, shape):
    out, w = shape(node.output[0]), shape(node.input[1])
    return _numel(out) * _numel(w[1:])  # each output element: C/g * k... MACs


def _conv_transpose(node, shape):
    x, w = shape(node.input[0]), shape(node.input[1])
    return _numel(x) * _numel(w[1:])  # each input element scatters into M/g * k... outputs


def _gemm(node, shape):
    a = shape(node.input[0])
    k = a[0] if attribute(node, "transA", 0) else a[1]
    return _numel(shape(node.output[0])) * (k if isinstance(k, int) else 1)


def _matmul(node, shape):
    k = shape(node.input[0])[-1]
    return _numel(shape(node.output[0])) * (k if isinstance(k, int) else 1)


FLOPS = {"Conv": _conv, "ConvTranspose": _conv_transpose, "Gemm": _gemm, "MatMul": _matmul}


def node_flops(node, shapes, is_float=lambda name: True):
    """FLOPs of one node; 0 when its shapes are unknown. Integer outputs (shape arithmetic) cost nothing."""
    def shape(name):
        s = shapes.get(name)
        if s is None:
            raise KeyError(name)
        return s
    try:
        if node.op_type in FLOPS:
            return FLOPS[node.op_type](node, shape)
        return sum(_numel(shape(o)) for o in node.output if o and is_float(o))
    except (KeyError, IndexError):
        return 0


def model_cost(model, shapes=None):
    """(params, flops) of a normalized Model; `shapes` overrides its shapes (a predicted cut)."""
    shapes = model.shapes if shapes is None else shapes
    params = sum(_numel(shapes[t.name]) for t in model.graph.initializer if t.data_type in FLOAT_TYPES)
    flops = sum(node_flops(node, shapes, model.is_float) for node in model.graph.node)
    return params, flops
