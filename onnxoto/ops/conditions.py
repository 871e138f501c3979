"""When an op keeps zeros, for ops where that depends on constants: read once, by coupling and by zero
propagation alike (they disagreed when each kept its own copy: a Clip(min=0.5) branch looked erasable).

Each takes the node and const(tensor) -> an initializer's values or None (computed at run time)."""
import numpy as np

from .spec import attribute, operand, scalar

UNKNOWN = None  # the condition depends on values computed at run time


def clip_keeps_zero(node, const):
    """clip(0) = 0 iff min <= 0 <= max; UNKNOWN when a bound is computed at run time."""
    low = const(operand(node, 1)) if operand(node, 1) else attribute(node, "min", -np.inf)
    high = const(operand(node, 2)) if operand(node, 2) else attribute(node, "max", np.inf)
    if low is None or high is None:
        return UNKNOWN
    return float(low) <= 0.0 <= float(high)


def pad_fill(node, const):
    """The value a constant-mode Pad writes (0 for the other modes: edge and reflection of zeros are
    zero); UNKNOWN when it is computed at run time."""
    if attribute(node, "mode", "constant") != "constant":
        return 0.0
    value = const(operand(node, 2)) if operand(node, 2) else attribute(node, "value", 0.0)
    return UNKNOWN if value is None else float(np.max(np.abs(value)))


def pad_widths(node, const, rank):
    """{axis: (before, after)} of the axes a Pad pads (opset >= 11: the pads input, optional axes input;
    older: the pads attribute); None when they are computed at run time or the rank is unknown."""
    pads = const(operand(node, 1)) if operand(node, 1) else attribute(node, "pads")
    axes = const(operand(node, 3)) if operand(node, 3) else None
    if rank is None or pads is None or (operand(node, 3) and axes is None):
        return None
    pads = [int(p) for p in np.ravel(pads)]
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in np.ravel(axes)]
    n = len(axes)
    return {a: (pads[k], pads[k + n]) for k, a in enumerate(axes) if pads[k] or pads[k + n]}


def pow_keeps_zero(node, const):
    """0^p = 0 iff every exponent p is positive (0^0 = 1); UNKNOWN for an exponent computed at run time."""
    exponent = const(operand(node, 1))
    return UNKNOWN if exponent is None else bool(np.all(exponent > 0))


def extremum_neutral_inputs(node, const):
    """The scalar constant operands of Max/Min that keep a zero input zero: max(0, c) = 0 iff c <= 0,
    min(0, c) = 0 iff c >= 0. Only scalars: a per-channel constant would train and could change sign."""
    neutral = []
    for k, name in enumerate(node.input):
        c = scalar(const(name)) if name else None
        if c is not None and (c <= 0.0 if node.op_type == "Max" else c >= 0.0):
            neutral.append(k)
    return neutral
