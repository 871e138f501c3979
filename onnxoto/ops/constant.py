"""Constant channels (OpSpec.constant): a zeroed channel that an op makes a per-channel constant, not zero.

A zeroed group's channel after Add(t), Sigmoid or HardSwish·s + t (Paddle's learnable affine blocks) is
the constant f(0), the same at every position. It stays removable where a consumer can fold it into its
bias (ops.fold). `keeps(node, axis, view)`: output 0 is constant along every axis but `axis` when
view.constant(tensor, axis) says so of the inputs (axis < 0: the input lacks it, so it must be
constant everywhere); view.in_group(tensor, axis): that axis carries the group's channels;
view.const(tensor): an initializer's values, else None.
`value(node, inputs, shape, opset)`: that output from the inputs' per-channel values (arrays with
size 1 on every axis but the channel's), `shape` the output's per-channel shape.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .spec import attribute


@dataclass(frozen=True)
class KeepsConstant:
    keeps: Callable
    value: Callable


def _elementwise_keeps(node, axis, view):
    """f of per-channel constants (broadcast operands included) is a per-channel constant."""
    rank = view.rank(node.output[0])
    return rank is not None and all(
        view.rank(t) is not None and view.constant(t, axis - (rank - view.rank(t))) for t in node.input if t)


def _evaluated(node, inputs, shape, opset):
    """The op itself on the per-channel values (onnx's reference implementation: numpy, no crash), as
    the model's opset defines it (Clip-6 reads its bounds from attributes, Clip-11 from inputs)."""
    from onnx.reference import ReferenceEvaluator

    names = [f"in{k}" if t else "" for k, t in enumerate(node.input)]
    feeds = {name: np.asarray(value) for name, value in zip(names, inputs) if name}
    with np.errstate(all="ignore"):
        out = ReferenceEvaluator(_one_node_model(node, names, feeds, opset)).run(None, feeds)[0]
    return np.broadcast_to(np.asarray(out), shape).astype(np.float32)


def _one_node_model(node, names, feeds, opset):
    from onnx import NodeProto, helper

    copy = NodeProto()
    copy.CopyFrom(node)
    del copy.input[:]
    copy.input.extend(names)
    del copy.output[:]
    copy.output.append("out")
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), None)
              for name, value in feeds.items()]
    graph = helper.make_graph([copy], "constant", inputs, [helper.make_tensor_value_info("out", 0, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _pool_keeps(node, axis, view):
    """Max or mean over windows of a constant is that constant, unless padding joins the mean."""
    padded = any(attribute(node, "pads", None) or ()) or attribute(node, "auto_pad", "NOTSET").startswith("SAME")
    if node.op_type == "AveragePool" and attribute(node, "count_include_pad", 0) and padded:
        return False
    return axis == 1 and view.constant(node.input[0], 1)


def _same_value(node, inputs, shape, opset):
    """The input's per-channel values, in the output's layout (pooled, or unit axes added or dropped)."""
    return np.asarray(inputs[0], np.float32).reshape(shape)


def _unit_axes_keeps(node, axis, view):
    """Reshape/Flatten/Squeeze/Unsqueeze that only add or drop axes of size 1 keep each channel whole."""
    src, dst = view.shape(node.input[0]), view.shape(node.output[0])
    if src is None or dst is None:
        return False
    real_src = [a for a, s in enumerate(src) if s != 1]
    real_dst = [a for a, s in enumerate(dst) if s != 1]
    if [src[a] for a in real_src] != [dst[a] for a in real_dst] or axis not in real_dst:
        return False
    return view.constant(node.input[0], real_src[real_dst.index(axis)])


def _concat_keeps(node, axis, view):
    """Along the joined axis a channel comes from one input: those of the group must be constant (the
    others hold other groups' channels); along any other axis every input must be."""
    rank = view.rank(node.output[0])
    if rank is None:
        return False
    joined = attribute(node, "axis", 0) % rank
    inputs = [t for t in node.input if t and (axis != joined or view.in_group(t, axis))]
    return bool(inputs) and all(view.constant(t, axis) for t in inputs)


def _mean_keeps(node, axis, view):
    """The mean, max or min over other axes of a constant channel is that constant."""
    src, dst = view.shape(node.input[0]), view.shape(node.output[0])
    if src is None or dst is None:
        return False
    axes = view.const(node.input[1]) if len(node.input) > 1 and node.input[1] else attribute(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        return False  # axes computed at run time
    axes = range(len(src)) if axes is None or len(np.ravel(axes)) == 0 else [int(a) % len(src) for a in np.ravel(axes)]
    kept = [a for a in range(len(src)) if a not in axes]
    in_axis = axis if attribute(node, "keepdims", 1) else (kept[axis] if axis < len(kept) else None)
    return in_axis is not None and in_axis not in axes and view.constant(node.input[0], in_axis)


ELEMENTWISE = KeepsConstant(_elementwise_keeps, _evaluated)
AVERAGED = KeepsConstant(_mean_keeps, _same_value)
JOINED = KeepsConstant(_concat_keeps, _evaluated)
POOLED = KeepsConstant(_pool_keeps, _same_value)
UNIT_AXES = KeepsConstant(_unit_axes_keeps, _same_value)
