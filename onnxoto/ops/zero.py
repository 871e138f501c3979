"""Zero propagation: is a node's output all zero, given which inputs are? (OpSpec.zero)

z(tensor): that input is all zero; const(tensor): an initializer's values or None. Used to follow
the zeros of an erased branch's weights to its output (groups.erase)."""
from .conditions import clip_keeps_zero, extremum_neutral_inputs, pad_fill, pow_keeps_zero


def first(node, z, const):
    """f(0) = 0 of the first input (elementwise, data movement, pooling)."""
    return z(node.input[0])


def every(node, z, const):
    """Sum-like: zero when every operand is."""
    return all(z(i) for i in node.input if i)


def any_operand(node, z, const):
    """Product-like: one zero operand makes the output zero."""
    return any(z(i) for i in node.input if i)


def branches(node, z, const):
    """Where(cond, x, y): zero when both branches are."""
    return z(node.input[1]) and z(node.input[2])


def affine(product_inputs, bias_inputs):
    """Zero when a product operand is zero and every bias is zero (or absent)."""
    def zero(node, z, const):
        products = [node.input[i] for i in product_inputs if i < len(node.input) and node.input[i]]
        biases = [node.input[i] for i in bias_inputs if i < len(node.input) and node.input[i]]
        return any(z(p) for p in products) and all(z(b) for b in biases)
    return zero


def clip(node, z, const):
    return z(node.input[0]) and clip_keeps_zero(node, const) is True


def pad(node, z, const):
    return z(node.input[0]) and pad_fill(node, const) == 0.0


def power(node, z, const):
    return z(node.input[0]) and pow_keeps_zero(node, const) is True


def extremum(node, z, const):
    """Max/Min: zero when every operand is zero or a constant that keeps zero (max(0, c<=0) = 0)."""
    neutral = extremum_neutral_inputs(node, const)
    rest = [name for k, name in enumerate(node.input) if name and k not in neutral]
    return bool(rest) and all(z(name) for name in rest)
