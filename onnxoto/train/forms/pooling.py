"""Max reductions (no gradient registered) as MaxPool, and AveragePool (its gradient kernel
dies of SIGFPE in onnxruntime-training 1.19.2 CPU) as a depthwise Conv with a constant kernel."""
import numpy as np

from ...ops import attribute
from .context import Context, Unsupported


def global_max_pool(node, ctx: Context) -> None:
    shape = ctx.static_shape(node.input[0], node)
    ctx.emit("MaxPool", [node.input[0]], node.output[0], base=node.name or node.output[0], kernel_shape=list(shape[2:]))


def reduce_max(node, ctx: Context) -> None:
    """ReduceMax over any static axes: MaxPool with a kernel covering them."""
    x, base = node.input[0], node.name or node.output[0]
    shape = ctx.shape(x)
    if shape is None:
        raise Unsupported("rank of the input unknown")
    rank = len(shape)
    axes = ctx.value(node.input[1]) if len(node.input) > 1 and node.input[1] else attribute(node, "axes")
    if axes is None or len(axes) == 0:
        if len(node.input) > 1 and node.input[1]:
            raise Unsupported("axes are not constant")
        if attribute(node, "noop_with_empty_axes", 0):
            ctx.emit("Identity", [x], node.output[0], base=base)
            return
        axes = range(rank)
    axes = sorted(int(a) % rank for a in axes)
    keepdims = attribute(node, "keepdims", 1)
    if any(shape[a] is None for a in axes):
        raise Unsupported("reduced axes are not static")
    if rank >= 3 and axes == list(range(2, rank)):
        pooled = ctx.emit("MaxPool", [x], node.output[0] if keepdims else None, base=base,
                          kernel_shape=[shape[a] for a in axes])
        if not keepdims:
            ctx.emit("Reshape", [pooled, ctx.shape_vector(x, [0, 0], f"{base}_kept")], node.output[0], base=base)
        return
    # General case: reduced axes last, flattened into one pooled axis of a (M, 1, R) tensor.
    kept = [a for a in range(rank) if a not in axes]
    moved = ctx.emit("Transpose", [x], base=f"{base}_moved", perm=kept + axes) if kept + axes != list(range(rank)) else x
    size = int(np.prod([shape[a] for a in axes]))
    flat = ctx.emit("Reshape", [moved, ctx.ints([-1, 1, size], f"{base}_flat_shape")], base=f"{base}_flat")
    pooled = ctx.emit("MaxPool", [flat], base=f"{base}_pooled", kernel_shape=[size])
    out_parts = [1 if a in axes else (a, 1) for a in range(rank)] if keepdims else [(a, 1) for a in kept]
    if not out_parts:
        out_parts = []
    target = ctx.shape_vector(x, out_parts, f"{base}_out_shape") if out_parts else ctx.ints([], f"{base}_scalar")
    ctx.emit("Reshape", [pooled, target], node.output[0], base=base)


def average_pool(node, ctx: Context) -> None:
    """Zero padding, then a depthwise Conv with weight 1/count; count_include_pad=0 divides by
    the number of real pixels per window (a constant map, so static spatial dims are needed)."""
    x, base = node.input[0], node.name or node.output[0]
    shape = ctx.shape(x)
    if shape is None or shape[1] is None:
        raise Unsupported("channel count not static")
    if attribute(node, "ceil_mode", 0) or attribute(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise Unsupported("ceil_mode / SAME auto_pad")
    kernel = list(attribute(node, "kernel_shape"))
    spatial = len(kernel)
    strides = list(attribute(node, "strides", [1] * spatial))
    dilations = list(attribute(node, "dilations", [1] * spatial))
    pads = list(attribute(node, "pads", [0] * 2 * spatial)) if attribute(node, "auto_pad", "NOTSET") == "NOTSET" else [0] * 2 * spatial
    channels = shape[1]
    weight = np.full((channels, 1, *kernel), 1.0 / np.prod(kernel), np.float32)
    conv_attrs = dict(kernel_shape=kernel, strides=strides, dilations=dilations, group=channels, pads=pads)
    if any(pads) and not attribute(node, "count_include_pad", 0):
        dims = ctx.static_shape(x, node)[2:]
        counts = _window_counts(dims, kernel, strides, dilations, pads)
        summed = ctx.emit("Conv", [x, ctx.const(np.ones_like(weight), f"{base}_ones")], base=f"{base}_sum", **conv_attrs)
        ctx.emit("Mul", [summed, ctx.const((1.0 / counts).astype(np.float32), f"{base}_inv_count")], node.output[0], base=base)
        return
    ctx.emit("Conv", [x, ctx.const(weight, f"{base}_kernel")], node.output[0], base=base, **conv_attrs)


def _window_counts(dims, kernel, strides, dilations, pads) -> np.ndarray:
    """How many unpadded positions each output window covers, shaped (out dims...)."""
    per_axis = []
    n = len(dims)
    for i, size in enumerate(dims):
        out = (size + pads[i] + pads[i + n] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1
        starts = np.arange(out) * strides[i] - pads[i]
        taps = starts[:, None] + np.arange(kernel[i])[None, :] * dilations[i]
        per_axis.append(((taps >= 0) & (taps < size)).sum(axis=1))
    counts = per_axis[0]
    for axis_counts in per_axis[1:]:
        counts = np.multiply.outer(counts, axis_counts)
    return counts.astype(np.float64)
