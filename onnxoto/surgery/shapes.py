"""Constants that carry shapes, rewritten after a cut: one entry per op type.

Each rewriter gets the node, the cut's new shapes, and a ConstantEditor; it rewrites the
constant inputs or attributes that hold sizes along cut axes.
"""
import numpy as np
from onnx import helper

from ..errors import ModelError


def reshape_target(node, new, old, edit):
    """Reshape/Expand shape: each explicit size becomes the output's new size (0 and -1 stay)."""
    out_shape = new.get(node.output[0])
    if out_shape is None or new.get(node.output[0]) == old.get(node.output[0]):
        return
    def fix(values):
        return [v if v in (0, -1) or not isinstance(s, int) else s for v, s in zip(values, out_shape)]
    edit.rewrite_vector(node, 1, fix)


def expand_shape(node, new, old, edit):
    out_shape = new.get(node.output[0])
    if out_shape is None or out_shape == old.get(node.output[0]):
        return
    def fix(values):
        shift = len(out_shape) - len(values)
        return [s if v > 1 and isinstance(s, int) else v for v, s in zip(values, out_shape[shift:])]
    edit.rewrite_vector(node, 1, fix)


def split_sizes(node, new, old, edit):
    axis = edit.attr(node, "axis", 0)
    sizes = [new[o][axis] for o in node.output]
    if sizes == [old[o][axis] for o in node.output]:
        return
    if len(node.input) > 1 and node.input[1]:
        edit.rewrite_vector(node, 1, lambda _: sizes)
    elif edit.attr(node, "split", None) is not None:
        edit.set_attr(node, "split", sizes)
    elif len(set(sizes)) > 1:  # an equal split (num_outputs) that the cut made unequal: give sizes explicitly
        edit.set_sizes_input(node, 1, sizes)
        edit.remove_attr(node, "num_outputs")


def slice_bounds(node, new, old, edit, removed):
    """Slice with step 1 on a cut axis: new start = kept positions before it; new end = start + new size."""
    x = node.input[0]
    if new[x] == old[x] and new[node.output[0]] == old[node.output[0]]:
        return
    axes = edit.vector(node, 3)
    starts = edit.vector(node, 1)
    rank = len(old[x])
    axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in axes]
    steps = edit.vector(node, 4) or [1] * len(axes)
    new_starts, new_ends, changed = list(starts), list(edit.vector(node, 2)), False
    for k, axis in enumerate(axes):
        gone_in = removed.get((x, axis))
        if gone_in is None and new[node.output[0]][axis] == old[node.output[0]][axis]:
            continue
        if steps[k] != 1:
            raise ModelError(f"Slice '{node.name}': cutting a strided slice is not supported")
        first = slice(int(starts[k]), int(new_ends[k]), 1).indices(old[x][axis])[0]
        before = 0 if gone_in is None else int(np.sum(gone_in < first))
        new_starts[k] = first - before
        new_ends[k] = new_starts[k] + new[node.output[0]][axis]
        changed = True
    if changed:
        edit.rewrite_vector(node, 1, lambda _: new_starts)
        edit.rewrite_vector(node, 2, lambda _: new_ends)


def conv_group(node, new, old, edit, weight_axis):
    group = edit.attr(node, "group", 1)
    if group == 1:
        return
    w = node.input[1]
    channels = new[node.input[0]][1] if weight_axis == 1 else new[node.output[0]][1]
    if not isinstance(channels, int):  # a symbolic size: the weight's other axis keeps per-group widths
        per_group = old[w][1 - weight_axis] // group
        edit.set_attr(node, "group", new[w][1 - weight_axis] // per_group)
        return
    edit.set_attr(node, "group", channels // new[w][1])


def resize_sizes(node, new, old, edit):
    if len(node.input) > 3 and node.input[3] and new[node.output[0]] != old[node.output[0]]:
        edit.rewrite_vector(node, 3, lambda values: list(new[node.output[0]]))


REWRITERS = {
    "Reshape": reshape_target,
    "Expand": expand_shape,
    "Split": split_sizes,
    "Slice": lambda node, new, old, edit: slice_bounds(node, new, old, edit, edit.removed),
    "Conv": lambda node, new, old, edit: conv_group(node, new, old, edit, weight_axis=1),
    "ConvTranspose": lambda node, new, old, edit: conv_group(node, new, old, edit, weight_axis=0),
    "Resize": resize_sizes,
}


def set_attribute(node, name, value):
    for a in node.attribute:
        if a.name == name:
            node.attribute.remove(a)
            break
    node.attribute.append(helper.make_attribute(name, value))
