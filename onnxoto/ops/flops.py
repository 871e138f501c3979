"""FLOPs of the ops whose cost is not one operation per output element (OpSpec.flops): multiply-
accumulates of Conv, ConvTranspose, Gemm and MatMul, from shapes (shape(name) -> tuple; str = symbolic)."""
import numpy as np

from .spec import attribute


def numel(shape):
    """Elements of a shape, a symbolic dim counted as 1."""
    return int(np.prod([d if isinstance(d, int) else 1 for d in shape])) if shape else 1


def conv(node, shape):
    out, w = shape(node.output[0]), shape(node.input[1])
    return numel(out) * numel(w[1:])  # each output element: C/g * k... MACs


def conv_transpose(node, shape):
    x, w = shape(node.input[0]), shape(node.input[1])
    return numel(x) * numel(w[1:])  # each input element scatters into M/g * k... outputs


def gemm(node, shape):
    a = shape(node.input[0])
    k = a[0] if attribute(node, "transA", 0) else a[1]
    return numel(shape(node.output[0])) * (k if isinstance(k, int) else 1)


def matmul(node, shape):
    k = shape(node.input[0])[-1]
    return numel(shape(node.output[0])) * (k if isinstance(k, int) else 1)
