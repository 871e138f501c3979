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
