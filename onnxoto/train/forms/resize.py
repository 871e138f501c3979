"""Resize (no CPU ResizeGrad) as exact linear maps: nearest with integer factors as
Reshape/Expand/Reshape, other nearest as Gather, linear as MatMul with interpolation matrices."""
import numpy as np

from ...ops import attribute
from .context import Context, Unsupported

_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")


def resize(node, ctx: Context) -> None:
    x, base = node.input[0], node.name or node.output[0]
    mode = attribute(node, "mode", "nearest")
    transform = attribute(node, "coordinate_transformation_mode", "half_pixel")
    if transform not in _MODES:
        raise Unsupported(f"coordinate_transformation_mode={transform}")
    if attribute(node, "antialias", 0):
        raise Unsupported("antialias")
    shape = ctx.shape(x)
    if shape is None:
        raise Unsupported("input rank unknown")
    sizes_in, scales = _sizes_and_scales(node, ctx, shape)
    resized = [a for a in range(len(shape)) if sizes_in[a] != shape[a] or scales[a] != 1.0]
    if any(shape[a] is None for a in resized):
        raise Unsupported("resized axes are not static")
    maps = {a: _source_positions(shape[a], sizes_in[a], scales[a], transform) for a in resized}
    if mode == "nearest":
        nearest = {a: _nearest(maps[a], shape[a], attribute(node, "nearest_mode", "round_prefer_floor")) for a in resized}
        _nearest_resize(node, ctx, x, shape, nearest)
    elif mode == "linear":
        _linear_resize(node, ctx, x, shape, {a: _linear_matrix(maps[a], shape[a]) for a in resized})
    else:
        raise Unsupported(f"mode={mode}")


def _sizes_and_scales(node, ctx: Context, shape) -> tuple[list, list]:
    """Output size and the scale the coordinate transform uses, per axis."""
    inputs = list(node.input) + [""] * 4
    # Resize-10 reads (X, scales); from opset 11 on, (X, roi, scales, sizes).
    scales_name, sizes_name = (inputs[1], "") if len(node.input) == 2 else (inputs[2], inputs[3])
    sizes = ctx.value(sizes_name) if sizes_name else None
    scales = ctx.value(scales_name) if scales_name else None
    axes = attribute(node, "axes")
    if axes is not None:  # opset 18: sizes/scales name only these axes
        full_sizes, full_scales = list(shape), [1.0] * len(shape)
        for k, axis in enumerate(int(a) % len(shape) for a in axes):
            if sizes is not None and len(sizes):
                full_sizes[axis] = sizes[k]
            elif scales is not None and len(scales):
                full_scales[axis] = scales[k]
        sizes = np.array(full_sizes) if sizes is not None and len(sizes) else None
        scales = np.array(full_scales) if sizes is None else None
    if sizes is not None and len(sizes):
        if attribute(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
            raise Unsupported("keep_aspect_ratio_policy")
        sizes = [None if s is None else int(s) for s in sizes]
        return sizes, [s / d if d else 1.0 for s, d in zip(sizes, shape)]
    if scales is None or not len(scales):
        raise Unsupported("scales/sizes are not constant")
    scales = [float(np.float32(s)) for s in scales]
    return [int(np.floor(d * s)) if d is not None else None for d, s in zip(shape, scales)], scales


def _source_positions(size_in: int, size_out: int, scale: float, transform: str) -> np.ndarray:
    """The input coordinate each output index samples (ONNX Resize's coordinate transform)."""
    i = np.arange(size_out, dtype=np.float64)
    if transform == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if transform == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if size_out > 1 else np.zeros(size_out)
    if transform == "align_corners":
        return i * (size_in - 1) / (size_out - 1) if size_out > 1 else np.zeros(size_out)
    if transform == "asymmetric":
        return i / scale
    return (i + 0.5) / scale  # tf_half_pixel_for_nn


def _nearest(positions: np.ndarray, size_in: int, rounding: str) -> np.ndarray:
    if rounding == "round_prefer_floor":
        index = np.where(positions - np.floor(positions) == 0.5, np.floor(positions), np.round(positions))
    elif rounding == "round_prefer_ceil":
        index = np.where(positions - np.floor(positions) == 0.5, np.ceil(positions), np.round(positions))
    elif rounding == "floor":
        index = np.floor(positions)
    else:
        index = np.ceil(positions)
    return np.clip(index, 0, size_in - 1).astype(np.int64)


def _linear_matrix(positions: np.ndarray, size_in: int) -> np.ndarray:
    """(out, in) weights of linear interpolation; positions clamped to the input as onnxruntime does."""
    positions = np.clip(positions, 0, size_in - 1)
    low = np.minimum(np.floor(positions).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = positions - low
    matrix = np.zeros((len(positions), size_in))
    rows = np.arange(len(positions))
    np.add.at(matrix, (rows, low), 1 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix


def _nearest_resize(node, ctx: Context, x: str, shape, index: dict) -> None:
    base = node.name or node.output[0]
    factors = {}
    for axis, idx in index.items():
        factor = len(idx) // shape[axis]
        if factor < 1 or len(idx) != factor * shape[axis] or not np.array_equal(idx, np.arange(len(idx)) // factor):
            factors = None
            break
        factors[axis] = factor
    if factors is not None:
        # Replication by integer factors: a unit axis after each resized one, expanded, merged back.
        rank = len(shape)
        unit_axes = [axis + 1 + k for k, axis in enumerate(sorted(factors))]
        grown = ctx.emit("Unsqueeze", [x, ctx.ints(unit_axes, f"{base}_unit_axes")], base=f"{base}_unit")
        expand_shape, merged = [], []
        for axis in range(rank):
            expand_shape.append(1)
            if axis in factors:
                expand_shape.append(factors[axis])
            merged.append((axis, factors.get(axis, 1)))
        expanded = ctx.emit("Expand", [grown, ctx.ints(expand_shape, f"{base}_expand_shape")], base=f"{base}_expanded")
        ctx.emit("Reshape", [expanded, ctx.shape_vector(x, merged, f"{base}_out_shape")], node.output[0], base=base)
        return
    current = x
    axes = sorted(index)
    for k, axis in enumerate(axes):
        out = node.output[0] if k == len(axes) - 1 else None
        current = ctx.emit("Gather", [current, ctx.ints(index[axis], f"{base}_index")], out, base=base, axis=axis)


def _linear_resize(node, ctx: Context, x: str, shape, matrices: dict) -> None:
    """Separable: y = A_h @ x @ A_w^T over the last two axes (only those may be resized)."""
    base, rank = node.name or node.output[0], len(shape)
    if any(axis < rank - 2 for axis in matrices):
        raise Unsupported("linear resize of an axis other than the last two")
    current = x
    steps = [(axis, matrices[axis]) for axis in sorted(matrices, reverse=True)]
    for k, (axis, matrix) in enumerate(steps):
        out = node.output[0] if k == len(steps) - 1 else None
        if axis == rank - 1:
            current = ctx.emit("MatMul", [current, ctx.const(matrix.T.astype(np.float32), f"{base}_interp_w")], out, base=base)
        else:
            current = ctx.emit("MatMul", [ctx.const(matrix.astype(np.float32), f"{base}_interp_h"), current], out, base=base)
