"""Erase whole residual branches (OTOv3): their nodes go, their Add becomes a pass-through."""
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelError
from ..graph import infer_shapes
from ..graph.normalize import drop_unused_initializers
from .cutter import drop_dead_nodes


def erase(proto, units, name="model"):
    """A copy of `proto` without the given ErasableUnits; each join Add passes its other input through."""
    joins = [u.join for u in units]
    if len(set(joins)) != len(joins):
        raise ModelError("cannot erase both inputs of one Add: the network would lose its path")
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    gone = {n for u in units for n in u.nodes} | set(joins)
    by_join = {u.join: u for u in units}
    alias, kept = {}, []
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        key = node.name or node.output[0]
        if key in by_join and node.output[0] in outputs:
            # the graph output keeps its name: the one place a pass-through needs a node
            kept.append(helper.make_node("Identity", [by_join[key].keep_input], [node.output[0]], name=key))
        elif key in by_join:
            alias[node.output[0]] = by_join[key].keep_input
        elif key not in gone:
            kept.append(node)
    for node in kept:
        for i, tensor in enumerate(node.input):
            while tensor in alias:
                tensor = alias[tensor]
            node.input[i] = tensor
    del graph.node[:]
    graph.node.extend(kept)
    drop_dead_nodes(graph)
    drop_unused_initializers(graph)
    produced = {o for n in graph.node for o in n.output}
    kept_info = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    return infer_shapes(out, name)


def zero_units(proto, units):
    """M0 for erasure: every parameter of the units set to zero."""
    names = {p for u in units for p in u.params}
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for k, init in enumerate(out.graph.initializer):
        if init.name in names:
            out.graph.initializer[k].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 0, init.name))
    return out
