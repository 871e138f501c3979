"""Zeroed channels that become per-channel constants (ops.constant) and the consumers that fold them into
their bias (ops.fold): Paddle's learnable affine blocks, act(x)·s + t, leave a zeroed channel at t.

Constancy is proved from the ops (every input of the node a per-channel constant or zero); the value
is computed, from the model's weights with the group zeroed, by `channel_constants`.
"""
from dataclasses import dataclass

import numpy as np
from onnx import numpy_helper

from ..graph import default_opset, producers
from ..ops import numel, operand, spec_of


@dataclass(frozen=True)
class Fold:
    """A consumer that takes the group's constant channels into its bias when they are cut."""

    consumer: str  # the consumer node's first output (node names may be empty)
    input: int  # which of its inputs carries the channels
    tensor: str  # that input
    axis: int  # its channel axis
    label: str = ""  # the consumer as messages name it: "Conv 'name'"


class _View:
    """What ops.constant's `keeps` asks: shapes, and whether a tensor is a per-channel constant along an axis."""

    def __init__(self, model, steady, keys):
        self.model, self.steady = model, steady  # steady: (tensor, axis) of the group, zero or constant
        self.keys = keys  # every (tensor, axis) of the group

    def shape(self, tensor):
        return self.model.shapes.get(tensor)

    def rank(self, tensor):
        shape = self.shape(tensor)
        return None if shape is None else len(shape)

    def const(self, tensor):
        return numpy_helper.to_array(self.model.initializers[tensor]) if tensor in self.model.initializers else None

    def in_group(self, tensor, axis):
        return (tensor, axis) in self.keys

    def constant(self, tensor, axis):
        shape = self.shape(tensor)
        if tensor in self.model.initializers and shape is not None:
            return all(size == 1 for a, size in enumerate(shape) if a != axis)
        return axis >= 0 and (tensor, axis) in self.steady


def constant_dims(model, producer, zero_keys, other_keys):
    """[(tensor, axis)] of the group that are per-channel constants once it is zeroed, in node order.

    producer: tensor -> (position, node); zero_keys: the group's (tensor, axis) that are zero;
    other_keys: the rest of the group's (tensor, axis)."""
    steady = set(zero_keys)
    view = _View(model, steady, steady | set(other_keys))
    found = []
    for tensor, axis in sorted(other_keys, key=lambda key: producer.get(key[0], (-1,))[0]):
        if tensor not in producer:
            continue
        node = producer[tensor][1]
        spec = spec_of(node)
        if spec is not None and spec.constant is not None and node.output[0] == tensor \
                and isinstance(model.shapes[tensor][axis], int) and spec.constant.keeps(node, axis, view):
            steady.add((tensor, axis))
            found.append((tensor, axis))
    return found


def fold_or_reason(model, label, node, inside_keys, constants):
    """(Fold, "") when `node` can take the group's constant channels on the input among inside_keys
    into its bias; (None, why not) else."""
    for tensor, axis in inside_keys:
        if (tensor, axis) not in constants or tensor in model.initializers:
            continue
        k = list(node.input).index(tensor)
        spec = spec_of(node)
        why = f"{label} consumes them and has no bias to fold them into" if spec is None or spec.fold is None \
            else spec.fold.declines(node, k, _initializer_values(model))
        if why:
            return None, f"zeroed channels are a constant, not zero: {why}"
        return Fold(node.output[0], k, tensor, axis, label), ""
    return None, f"channels are not exactly zero where {label} consumes them"


def needed_constants(constants, folds, producer):
    """The constant tensors the folded ones are computed from, in node order."""
    keys = dict(constants)
    wanted, stack = set(), [f.tensor for f in folds]
    while stack:
        tensor = stack.pop()
        if tensor in keys and tensor not in wanted:
            wanted.add(tensor)
            stack.extend(t for t in producer[tensor][1].input if t)
    return [(t, a) for t, a in constants if t in wanted]


def unfoldable_values(model, producer, group):
    """Why the constants, computed from the weights as they are with the group zeroed, cannot be folded
    (not finite: log(0)), or ''."""
    const = zeroed_values(model, [(s.name, s.axis, s.index.ravel()) for s in group.producers])
    try:
        values = channel_constants(model, producer, group.constants, const)
    except Exception as exc:  # an op the reference evaluator cannot run on per-channel values
        return f"zeroed channels are a constant that cannot be computed ({type(exc).__name__}: {exc})"[:200]
    for fold in group.folds:
        dim = next(d for d in group.dims if (d.tensor, d.axis) == (fold.tensor, fold.axis))
        if not np.all(np.isfinite(np.take(values[fold.tensor].ravel(), dim.index.ravel()))):
            return f"zeroed channels are a constant that is not finite where '{fold.consumer}' consumes them"
    return ""


def channel_constants(model, producer, constants, const):
    """tensor -> its per-channel values (size 1 on every axis but the channel's) for the group's
    constant tensors; const(name) gives an initializer's values with the group zeroed, and every
    other input of those nodes is a zero channel of the group."""
    values, opset = {}, default_opset(model.proto)
    for tensor, axis in constants:
        node = producer[tensor][1]
        shape = _per_channel(model.shapes[tensor], axis)
        inputs = [_input_value(model, t, values, const, axis - len(shape) + len(model.shapes[t] or ()))
                  if t else None for t in node.input]
        values[tensor] = spec_of(node).constant.value(node, inputs, shape, opset)
    return values


def _input_value(model, tensor, values, const, axis):
    if tensor in values:
        return values[tensor]
    if tensor in model.initializers:
        return const(tensor)
    return np.zeros(_per_channel(model.shapes[tensor], axis), np.float32)  # a zero channel of the group


def _per_channel(shape, axis):
    return tuple(size if a == axis else 1 for a, size in enumerate(shape))


def _initializer_values(model):
    return lambda name: numpy_helper.to_array(model.initializers[name]) if name in model.initializers else None


def zeroed_values(model, slices):
    """const(name) for channel_constants: initializers with `slices` ([(name, axis, positions)]) zero."""
    zeroed = {}
    for name, axis, positions in slices:
        zeroed.setdefault(name, []).append((axis, positions))
    plain = _initializer_values(model)

    def const(name):
        array = plain(name)
        if array is None or name not in zeroed:
            return array
        array = array.copy()
        for axis, positions in zeroed[name]:
            index = [slice(None)] * array.ndim
            index[axis] = positions
            array[tuple(index)] = 0
        return array
    return const


def made_by_folds(model, groups, keep, shapes):
    """(params, flops) a cut adds to hold folded constants: the biases made for consumers without one
    (sizes at `shapes`), and the Add after a MatMul (one operation per output element)."""
    folds = [f for g in groups if g.folds and g.id in keep and not keep[g.id].all() for f in g.folds]
    if not folds:
        return 0, 0
    writer, made = producers(model.graph), {}
    for f in folds:
        fold = spec_of(writer[f.consumer]).fold
        if fold.bias is None or not operand(writer[f.consumer], fold.bias):
            made[f.consumer] = fold
    params = flops = 0
    for out, fold in made.items():
        shape = shapes.get(out) or ()
        size = shape[fold.out_axis % len(shape)] if shape else 0
        params += size if isinstance(size, int) else 0
        flops += numel(shape) if fold.bias is None else 0
    return params, flops
