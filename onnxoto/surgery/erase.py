"""Erase whole branches (OTOv3): their nodes go; an Add join passes its other input through, a
Concat join loses the branch's segment (the cutter removes its channels downstream)."""
from onnx import helper

from ..errors import ModelError


def remove_units(graph, units):
    """Delete the units' nodes from `graph` in place and rewire their joins; dead nodes and unused
    initializers are left for the caller's cleanup."""
    adds = [u for u in units if u.kind == "add"]
    joins = [u.join for u in adds]
    if len(set(joins)) != len(joins):
        raise ModelError("cannot erase both inputs of one Add: the network would lose its path")
    gone = {n for u in units for n in u.nodes} | set(joins)
    by_join = {u.join: u for u in adds}
    dropped = {}  # Concat join -> branch outputs it loses
    for u in units:
        if u.kind == "concat":
            dropped.setdefault(u.join, set()).add(u.output)
    alias, kept = {}, []
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        key = node.name or node.output[0]
        if key in gone and key not in by_join:
            continue
        if key in dropped:
            _drop_segments(node, dropped[key])
            if len(node.input) == 1 and node.output[0] not in outputs:
                alias[node.output[0]] = node.input[0]  # a one-input Concat is a copy
                continue
        if key in by_join and node.output[0] in outputs:
            # the graph output keeps its name: the one place a pass-through needs a node
            kept.append(helper.make_node("Identity", [by_join[key].keep_input], [node.output[0]], name=key))
        elif key in by_join:
            alias[node.output[0]] = by_join[key].keep_input
        else:
            kept.append(node)
    for node in kept:
        for i, tensor in enumerate(node.input):
            while tensor in alias:
                tensor = alias[tensor]
            node.input[i] = tensor
    del graph.node[:]
    graph.node.extend(kept)


def _drop_segments(concat, branch_outputs):
    inputs = [i for i in concat.input if i not in branch_outputs]
    if not inputs:
        raise ModelError(f"cannot erase every input of Concat '{concat.name}': the network would lose its path")
    del concat.input[:]
    concat.input.extend(inputs)

