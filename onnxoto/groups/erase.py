"""Erasable units (OTOv3): residual branches that can be removed whole when all their parameters are zero.

A unit is the set of nodes that feed one input of an Add and nothing else, back to the point
where that input branches off the other one. With every parameter of the unit zero, its output
must be exactly zero (checked by the ZERO table), so the Add becomes a pass-through of the
other input.
"""
from dataclasses import dataclass, field

import numpy as np

from .cost import node_flops


def _all(node, z):
    return all(z(i) for i in node.input if i)


def _any(node, z):
    return any(z(i) for i in node.input if i)


def _first(node, z):
    return z(node.input[0])


def _affine(product_inputs, bias_inputs):
    """Zero when a product operand is zero and every bias is zero (or absent)."""
    def rule(node, z):
        products = [node.input[i] for i in product_inputs if i < len(node.input) and node.input[i]]
        biases = [node.input[i] for i in bias_inputs if i < len(node.input) and node.input[i]]
        return any(z(p) for p in products) and all(z(b) for b in biases)
    return rule


# Is the output all zero, given which inputs are all zero? One entry per op type; absent = not zero.
ZERO = {
    **dict.fromkeys(["Relu", "LeakyRelu", "Elu", "Selu", "Tanh", "Erf", "Gelu", "HardSwish", "Abs", "Neg",
                     "Identity", "Dropout", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
                     "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean",
                     "ReduceSum", "ReduceMax", "Resize", "Slice", "Split", "Pad", "Expand", "Tile",
                     "Cast", "Sqrt", "Clip", "Mish", "Softsign"], _first),
    **dict.fromkeys(["Add", "Sub", "Sum", "Max", "Min", "Mean", "Concat"], _all),
    "Mul": _any,
    "Div": _first,
    "MatMul": _any,
    "Conv": _affine([0, 1], [2]),
    "ConvTranspose": _affine([0, 1], [2]),
    "Gemm": _affine([0, 1], [2]),
    "BatchNormalization": _affine([1], [2]),
    "InstanceNormalization": _affine([1], [2]),
    "LayerNormalization": _affine([1], [2]),
}


@dataclass
class ErasableUnit:
    id: str
    join: str  # the Add node that becomes a pass-through
    output: str  # the branch's output tensor (an input of the join)
    keep_input: str  # the join's other input, which replaces its output
    nodes: list = field(default_factory=list)  # node names, graph order
    params: list = field(default_factory=list)  # initializer names owned by the unit
    param_count: int = 0
    flops: int = 0


def find_erasable(model):
    """The residual branches of a normalized graph.Model that can be erased exactly."""
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    readers = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = set(model.output_names)
    units = []
    for join in nodes:
        if join.op_type != "Add" or len(join.input) != 2 or len({*join.input}) != 2:
            continue
        a, b = join.input
        if model.shapes.get(a) != model.shapes.get(b) or model.shapes.get(a) is None:
            continue
        for branch_out, other in ((a, b), (b, a)):
            unit = _branch(branch_out, other, join, producer, readers, outputs, model)
            if unit is not None and _zero_when_params_zero(unit, model):
                units.append(unit)
    by_name = {_name(n): n for n in nodes}
    for unit in units:
        unit.id = f"erase:{unit.nodes[0]}"
        unit.flops = int(sum(node_flops(by_name[n], model.shapes, model.is_float) for n in unit.nodes))
        unit.param_count = int(sum(np.prod(model.shapes[p]) for p in unit.params))
    return units


def _ancestors(tensor, producer):
    """Names of the nodes `tensor` depends on."""
    seen, stack = set(), [tensor]
    while stack:
        node = producer.get(stack.pop())
        if node is None or _name(node) in seen:
            continue
        seen.add(_name(node))
        stack.extend(i for i in node.input if i)
    return seen


def _name(node):
    return node.name or node.output[0]


def _branch(out, other, join, producer, readers, outputs, model):
    """The nodes `out` depends on and `other` does not, if nothing outside reads them."""
    own = _ancestors(out, producer) - _ancestors(other, producer)
    # shape arithmetic (integer outputs) may be shared with other layers; dead-node cleanup removes it
    own = {_name(n) for n in model.graph.node if _name(n) in own and any(model.is_float(o) for o in n.output)}
    members = [n for n in model.graph.node if _name(n) in own]
    allowed = own | {_name(join)}
    for m in members:
        outside = [r for o in m.output for r in readers.get(o, [])
                   if _name(r) not in allowed and any(model.is_float(t) for t in r.output)]
        if set(m.output) & outputs or outside:
            return None  # something outside the branch reads it: not a separable branch
    params = sorted({i for m in members for i in m.input if _is_weight(i, model)})
    if not members or not params or producer.get(out) not in members:
        return None
    if any(_name(r) not in own for p in params for r in readers.get(p, [])):
        return None  # a parameter also read outside the branch (tied)
    return ErasableUnit(id="", join=_name(join), output=out, keep_input=other,
                        nodes=[_name(m) for m in members], params=params)


def _is_weight(name, model):
    """A float initializer with more than one element; shared scalars (Clip bounds, scales) are not."""
    return model.is_param(name) and int(np.prod(model.shapes[name])) > 1


def _zero_when_params_zero(unit, model):
    """Follow zeros from the unit's parameters to its output with the ZERO table."""
    zero = set(unit.params)
    members = set(unit.nodes)
    for node in model.graph.node:
        if _name(node) not in members:
            continue
        rule = ZERO.get(node.op_type)
        if rule is not None and rule(node, lambda t: t in zero):
            zero.update(node.output)
    return unit.output in zero
