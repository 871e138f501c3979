"""Sums that onnxruntime-training (1.19.2) registers no gradient for, as Adds: Sum and Mean (Caffe2's
residual joins are Sum) and LRN's sum of squares over a window of channels (GoogLeNet/AlexNet-era exports)."""
import numpy as np
from onnx import helper

from ...ops import attribute
from .context import Context, Unsupported


def _added(terms: list, ctx: Context, base: str, output: str | None = None) -> str:
    total = terms[0]
    for k, term in enumerate(terms[1:], start=1):
        total = ctx.emit("Add", [total, term], output if k == len(terms) - 1 else None, base=f"{base}_add")
    return total


def sum_(node, ctx: Context) -> None:
    terms, base = [i for i in node.input if i], node.name or node.output[0]
    if len(terms) == 1:
        ctx.emit("Identity", terms, node.output[0], base=base)
    else:
        _added(terms, ctx, base, node.output[0])


def mean(node, ctx: Context) -> None:
    terms, base = [i for i in node.input if i], node.name or node.output[0]
    dtype = helper.tensor_dtype_to_np_dtype(ctx.elem_type(terms[0]) or 1)
    total = _added(terms, ctx, base)
    ctx.emit("Div", [total, ctx.const(np.array(len(terms), dtype), f"{base}_count")], node.output[0], base=base)


def lrn(node, ctx: Context) -> None:
    """x / (bias + alpha / size * (sum of x^2 over channels c - (size-1)//2 .. c + size//2))^beta, the window
    taken as `size` shifted slices of the squares padded with zeros on the channel axis."""
    x, base = node.input[0], node.name or node.output[0]
    shape = ctx.shape(x)
    if shape is None or len(shape) < 3 or shape[1] is None:
        raise Unsupported("needs the rank and the channel count of the input")
    size = int(attribute(node, "size"))
    alpha, beta, bias = (float(attribute(node, k, d)) for k, d in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    dtype = helper.tensor_dtype_to_np_dtype(ctx.elem_type(x) or 1)
    before, after = (size - 1) // 2, size // 2
    squares = ctx.emit("Mul", [x, x], base=f"{base}_square")
    pads = [0, before] + [0] * (len(shape) - 2) + [0, after] + [0] * (len(shape) - 2)
    padded = ctx.emit("Pad", [squares, ctx.ints(pads, f"{base}_pads")], base=f"{base}_padded")
    terms = []
    for k in range(size):  # the window's k-th channel of every output channel c: padded channel c + k
        start = ctx.ints([k], f"{base}_start")
        end = ctx.ints([k + shape[1]], f"{base}_end")
        terms.append(ctx.emit("Slice", [padded, start, end, ctx.ints([1], f"{base}_axis")], base=f"{base}_shifted"))
    window = _added(terms, ctx, base)
    scaled = ctx.emit("Mul", [window, ctx.const(np.array(alpha / size, dtype), f"{base}_alpha")], base=f"{base}_scaled")
    shifted = ctx.emit("Add", [scaled, ctx.const(np.array(bias, dtype), f"{base}_bias")], base=f"{base}_shifted")
    denominator = ctx.emit("Pow", [shifted, ctx.const(np.array(beta, dtype), f"{base}_beta")], base=f"{base}_power")
    ctx.emit("Div", [x, denominator], node.output[0], base=base)
