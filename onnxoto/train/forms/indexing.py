"""Index-moving ops that fail in training as Gathers with constant indices: Slice with a
negative step (fails at run time) and Pad in reflect/edge/wrap mode (only constant trains)."""
import numpy as np

from ...ops import attribute
from .context import Context, NotNeeded, Unsupported


def slice_(node, ctx: Context) -> None:
    x, base = node.input[0], node.name or node.output[0]
    shape = ctx.shape(x)
    starts, ends, axes, steps = (ctx.value(n) if n else None for n in (list(node.input) + [""] * 5)[1:5])
    has_steps = len(node.input) > 4 and node.input[4]
    if not has_steps or (steps is not None and all(int(s) > 0 for s in steps)):
        raise NotNeeded("positive steps train as they are")
    if starts is None or ends is None or (len(node.input) > 3 and node.input[3] and axes is None) or \
            (len(node.input) > 4 and node.input[4] and steps is None) or shape is None:
        raise Unsupported("non-constant bounds or unknown rank")
    rank = len(shape)
    axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    forward = [k for k, s in enumerate(steps) if s > 0]
    current = x
    if forward:
        current = ctx.emit("Slice", [x, ctx.ints([starts[k] for k in forward], f"{base}_starts"),
                                     ctx.ints([ends[k] for k in forward], f"{base}_ends"),
                                     ctx.ints([axes[k] for k in forward], f"{base}_axes"),
                                     ctx.ints([steps[k] for k in forward], f"{base}_steps")], base=f"{base}_forward")
    backward = [k for k, s in enumerate(steps) if s < 0]
    for j, k in enumerate(backward):
        size = shape[axes[k]]
        if size is None:
            raise Unsupported(f"axis {axes[k]} is not static")
        index = _negative_step_indices(size, int(starts[k]), int(ends[k]), steps[k])
        out = node.output[0] if j == len(backward) - 1 else None
        current = ctx.emit("Gather", [current, ctx.ints(index, f"{base}_index")], out, base=base, axis=axes[k])


def _negative_step_indices(size: int, start: int, end: int, step: int) -> np.ndarray:
    """ONNX Slice semantics for step < 0: start clamped to [0, size-1], end to [-1, size-1]."""
    start = start + size if start < 0 else start
    end = end + size if end < 0 else end
    start = min(max(start, 0), size - 1)
    end = min(max(end, -1), size - 1)
    return np.arange(start, end, step, dtype=np.int64)


def pad(node, ctx: Context) -> None:
    mode = attribute(node, "mode", "constant")
    if mode == "constant":
        raise NotNeeded("constant Pad trains as it is")
    x, base = node.input[0], node.name or node.output[0]
    shape = ctx.shape(x)
    pads = ctx.value(node.input[1]) if len(node.input) > 1 else attribute(node, "pads")
    if pads is None or shape is None:
        raise Unsupported("non-constant pads or unknown rank")
    rank = len(shape)
    axes = ctx.value(node.input[3]) if len(node.input) > 3 and node.input[3] else range(rank)
    axes = [int(a) % rank for a in axes]
    n = len(axes)
    padded = [(axes[k], int(pads[k]), int(pads[k + n])) for k in range(n) if pads[k] or pads[k + n]]
    if not padded:
        ctx.emit("Identity", [x], node.output[0], base=base)
        return
    current = x
    for j, (axis, before, after) in enumerate(padded):
        if shape[axis] is None:
            raise Unsupported(f"padded axis {axis} is not static")
        index = _pad_indices(shape[axis], before, after, mode)
        out = node.output[0] if j == len(padded) - 1 else None
        current = ctx.emit("Gather", [current, ctx.ints(index, f"{base}_index")], out, base=base, axis=axis)


def _pad_indices(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """The source index of each output position along one axis (negative pads crop)."""
    positions = np.arange(-before, size + after)
    if mode == "edge":
        return np.clip(positions, 0, size - 1).astype(np.int64)
    if mode == "wrap":
        return np.mod(positions, size).astype(np.int64)
    if size == 1:
        return np.zeros_like(positions)
    period = 2 * (size - 1)  # reflect: mirrored about the edges, edges not repeated
    folded = np.mod(positions, period)
    return np.where(folded < size, folded, period - folded).astype(np.int64)
