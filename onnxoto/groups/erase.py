"""Erasable units (OTOv3): branches that can be removed whole when all their parameters are zero.

A unit is the set of nodes that feed one input of a join (an Add or a Concat) and nothing else,
back to the point where that input branches off the others.
- Add: with every parameter of the unit zero its output must be exactly zero (the ops' zero facet),
  so the Add becomes a pass-through of the other input.
- Concat: the branch's output is a segment of channels; the unit also owns what makes those
  channels exactly zero downstream (a BatchNorm after the Concat, say), taken from the channel
  groups, so erasing drops the segment and cuts its channels from every later layer.
"""
from dataclasses import dataclass, field

import numpy as np

from onnx import numpy_helper

from ..graph import display_name, node_reads, producers, readers
from ..ops import attribute, is_value_input, spec_of
from .build import SINGLE_CHANNEL
from .cost import model_cost, node_flops
from .group import ParamSlice, PRODUCER
from .masks import reduced_shapes


@dataclass
class ErasableUnit:
    id: str
    kind: str  # "add": the join passes its other input through; "concat": the join loses a segment
    join: str  # the join node's name
    output: str  # the branch's output tensor (an input of the join)
    keep_input: str = ""  # add: the join's other input, which replaces its output
    nodes: list = field(default_factory=list)  # node names, graph order
    params: list = field(default_factory=list)  # initializer names owned by the unit (whole)
    zero_slices: list = field(default_factory=list)  # concat: ParamSlices outside the branch zeroed with it
    removed: dict = field(default_factory=dict)  # concat: (tensor, axis) -> positions cut outside the branch
    param_count: int = 0
    flops: int = 0


def find_erasable(model, groups=()):
    """The branches of a normalized graph.Model that can be erased exactly (`groups`: its channel
    groups, which say where a Concat segment's channels go)."""
    graph = _Graph(model)
    units = []
    for join in graph.nodes:
        inputs = [i for i in join.input if i]
        if len(inputs) < 2 or len(set(inputs)) != len(inputs):
            continue
        if join.op_type == "Add" and len(inputs) == 2:
            a, b = inputs
            if model.shapes.get(a) != model.shapes.get(b) or model.shapes.get(a) is None:
                continue
            for out, other in ((a, b), (b, a)):
                unit = _branch(out, [other], join, graph, model)
                if unit is not None and _zero_when_params_zero(unit, model):
                    unit.kind, unit.keep_input = "add", other
                    units.append(unit)
        elif join.op_type == "Concat":
            for k, out in enumerate(inputs):
                unit = _branch(out, inputs[:k] + inputs[k + 1:], join, graph, model)
                if unit is not None and _attach_segment(unit, join, k, graph, model, groups):
                    units.append(unit)
    for unit in units:
        unit.id = f"erase:{unit.nodes[0]}"
        _count_cost(unit, graph, model)
    return units


class _Graph:
    """Producers, readers and node names of a model's graph."""

    def __init__(self, model):
        self.nodes = list(model.graph.node)
        self.producer = producers(model.graph)
        self.readers = readers(model.graph)
        self.by_name = {display_name(n): n for n in self.nodes}
        self.outputs = set(model.output_names)

    def ancestors(self, tensor):
        """Names of the nodes `tensor` depends on."""
        seen, stack = set(), [tensor]
        while stack:
            node = self.producer.get(stack.pop())
            if node is None or display_name(node) in seen:
                continue
            seen.add(display_name(node))
            stack.extend(node_reads(node))
        return seen


def _branch(out, others, join, graph, model):
    """The nodes `out` depends on and none of `others` does, if nothing outside reads them."""
    own = graph.ancestors(out) - set().union(*(graph.ancestors(o) for o in others))
    # shape arithmetic (integer outputs) may be shared with other layers; dead-node cleanup removes it
    own = {display_name(n) for n in graph.nodes if display_name(n) in own and any(model.is_float(o) for o in n.output)}
    members = [n for n in graph.nodes if display_name(n) in own]
    allowed = own | {display_name(join)}
    for m in members:
        outside = [r for o in m.output for r in graph.readers.get(o, [])
                   if display_name(r) not in allowed and any(model.is_float(t) for t in r.output)]
        if set(m.output) & graph.outputs or outside:
            return None  # something outside the branch reads it: not a separable branch
    params = sorted({i for m in members for k, i in enumerate(m.input)
                     if _is_weight(i, model) and is_value_input(m, k)})  # not Resize's scales
    if not members or not params or graph.producer.get(out) not in members:
        return None
    if any(display_name(r) not in own for p in params for r in graph.readers.get(p, [])):
        return None  # a parameter also read outside the branch (tied)
    return ErasableUnit(id="", kind="", join=display_name(join), output=out,
                        nodes=[display_name(m) for m in members], params=params)


def _is_weight(name, model):
    """A float initializer with more than one element; shared scalars (Clip bounds, scales) are not."""
    return model.is_param(name) and int(np.prod(model.shapes[name])) > 1


def _zero_when_params_zero(unit, model):
    """Follow zeros from the unit's parameters to its output with each op's zero facet."""
    zero = set(unit.params)
    members = set(unit.nodes)

    def const(name):
        init = model.initializers.get(name) if name else None
        return None if init is None else numpy_helper.to_array(init)

    for node in model.graph.node:
        if display_name(node) not in members:
            continue
        spec = spec_of(node)
        if spec is not None and spec.zero is not None and spec.zero(node, lambda t: t in zero, const):
            zero.update(node.output)
    return unit.output in zero


def _attach_segment(unit, join, k, graph, model, groups):
    """Give a Concat branch the channel ZIGs of its segment: every position of the segment must
    belong to ZIGs that lie wholly inside it, in groups that are exactly zero-invariant, and that
    reach nothing upstream of the Concat outside the branch. False if any of that fails."""
    whole = model.shapes.get(join.output[0])
    if not whole:
        return False
    axis = attribute(join, "axis", 0) % len(whole)
    sizes = [(model.shapes.get(i) or (None,) * len(whole))[axis] for i in join.input]
    if not all(isinstance(s, int) for s in sizes):
        return False
    start = sum(sizes[:k])
    stop = start + sizes[k]
    inside = {o for n in unit.nodes for o in graph.by_name[n].output} | set(unit.params)
    upstream = graph.ancestors(join.output[0]) - set(unit.nodes) - {display_name(join)}
    touched_upstream = {t for n in upstream for t in [*graph.by_name[n].input, *graph.by_name[n].output]}
    touched_upstream |= set(model.input_names)
    covered, zero, removed = [], {}, {}
    for g in groups:
        dim = next((d for d in g.dims if d.tensor == join.output[0] and d.axis == axis), None)
        if dim is None:
            continue
        rows = (dim.index >= start) & (dim.index < stop)
        zigs = rows.all(axis=1)
        if not rows.any():
            continue
        if (rows.any(axis=1) & ~zigs).any() or not (g.prunable or g.reason == SINGLE_CHANNEL) or g.folds:
            return False  # a ZIG straddles the segment's edge, or its channels are not exactly removable (or
            # only with a fold into a bias, which erasing does not make)
        covered.append(dim.index[zigs].ravel())
        for s in g.producers:
            if s.name not in inside:
                zero.setdefault((s.name, s.axis), []).append(s.index[zigs].ravel())
        for d in g.dims:
            if d.tensor in touched_upstream and d.tensor not in inside:
                return False  # cutting the segment would cut a tensor the other inputs depend on
            if d.tensor not in inside:
                removed.setdefault((d.tensor, d.axis), []).append(d.index[zigs].ravel())
    if not covered or not np.array_equal(np.unique(np.concatenate(covered)), np.arange(start, stop)):
        return False
    unit.kind = "concat"
    unit.zero_slices = [ParamSlice(name, axis, np.unique(np.concatenate(parts))[None, :], PRODUCER)
                        for (name, axis), parts in sorted(zero.items())]
    unit.removed = {key: np.unique(np.concatenate(parts)) for key, parts in removed.items()}
    return True


def _count_cost(unit, graph, model):
    """Params and FLOPs gone with the unit: its own nodes, the join when it becomes a pass-through,
    and (concat) what the cut saves downstream."""
    join = graph.by_name[unit.join]
    members = set(unit.nodes)
    owned = {i for n in unit.nodes for i in graph.by_name[n].input  # weights, and scalars no one else reads
             if model.is_param(i) and all(display_name(r) in members for r in graph.readers[i])}
    unit.param_count = int(sum(np.prod(model.shapes[p]) for p in owned))
    unit.flops = int(sum(node_flops(graph.by_name[n], model.shapes, model.is_float) for n in unit.nodes))
    if unit.kind == "add":
        unit.flops += int(node_flops(join, model.shapes, model.is_float))
        return
    params, flops = model_cost(model)
    shapes = reduced_shapes(model.shapes, unit.removed)
    cut_params, cut_flops = model_cost(model, shapes)
    unit.param_count += params - cut_params
    unit.flops += flops - cut_flops
    if len([i for i in join.input if i]) == 2:  # one input left: the Concat goes too
        unit.flops += int(node_flops(join, shapes, model.is_float))
