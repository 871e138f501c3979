"""Cutting a group whose zeroed channels are a constant: their consumers' biases take it first (ops.fold)."""
import numpy as np
from onnx import helper, numpy_helper

from ..graph import fresh_name, producers, taken_names
from ..groups import channel_constants, zeroed_values
from ..ops import operand, spec_of


def fold_constants(graph, model, groups, keep, removed):
    """Add what the removed ZIGs' constant channels contribute to each consumer's bias, in `graph`
    (not yet sliced); `removed` ((tensor, axis) -> positions) learns the biases made or replaced."""
    cut = [(g, ~keep[g.id]) for g in groups if g.folds and g.id in keep and not keep[g.id].all()]
    if not cut:
        return
    zeroed = [(s.name, s.axis, s.index[gone].ravel()) for g, gone in cut for s in g.producers]
    const = zeroed_values(model, zeroed)
    producer = {out: (k, node) for k, node in enumerate(model.graph.node) for out in node.output if out}
    nodes = producers(graph)
    deltas = {}  # consumer -> what joins its bias, summed over the groups that fold into it
    for g, gone in cut:
        values = channel_constants(model, producer, g.constants, const)
        for fold in g.folds:
            if fold.consumer not in nodes:
                continue  # the consumer was in a branch erased with the cut
            dim = next(d for d in g.dims if (d.tensor, d.axis) == (fold.tensor, fold.axis))
            positions = dim.index[gone].ravel()
            channels = np.zeros(model.shapes[fold.tensor][fold.axis])
            channels[positions] = values[fold.tensor].ravel()[positions]
            node = nodes[fold.consumer]
            delta = spec_of(node).fold.delta(node, fold.input, channels, const)
            deltas[fold.consumer] = deltas.get(fold.consumer, 0) + delta
    taken = taken_names(graph)
    for consumer, delta in deltas.items():
        node = nodes[consumer]
        _add_to_bias(graph, node, spec_of(node).fold, delta, model, removed, taken)


def _add_to_bias(graph, node, folds, delta, model, removed, taken):
    out = node.output[0]
    dtype = helper.tensor_dtype_to_np_dtype(model.initializers[node.input[1]].data_type)  # the weight's
    out_axis = folds.out_axis % len(model.shapes[out])
    along_out = removed.get((out, out_axis))
    if folds.bias is None:  # no bias input: an Add after the node
        inner = fresh_name(f"{out}_unfolded", taken)
        node.output[0] = inner
        name = _initializer(graph, f"{out}_folded_bias", delta, dtype, taken)
        graph.node.insert(list(graph.node).index(node) + 1,
                          helper.make_node("Add", [inner, name], [out], name=fresh_name(f"{out}_fold", taken)))
        if along_out is not None:
            removed[(name, 0)] = along_out
        return
    old = operand(node, folds.bias)
    bias = numpy_helper.to_array(model.initializers[old]) if old else np.zeros(0)
    new = (bias + delta) if old else delta
    name = _initializer(graph, f"{old or out}_folded", new, dtype, taken)
    while len(node.input) <= folds.bias:
        node.input.append("")
    node.input[folds.bias] = name
    if old and new.shape == bias.shape:  # cut as the old one was
        for (tensor, axis), positions in list(removed.items()):
            if tensor == old:
                removed[(name, axis)] = positions
    elif along_out is not None:
        removed[(name, new.ndim - 1)] = along_out


def _initializer(graph, stem, values, dtype, taken):
    name = fresh_name(stem, taken)
    graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
    return name
