"""Constants that carry shapes, rewritten after a cut (OpSpec.rewrite).

Each rewriter gets the node, the cut's new and old shapes, and surgery's ConstantEditor; it rewrites
the constant inputs or attributes that hold sizes along cut axes.
"""
import numpy as np

from ..errors import ModelError
from .spec import attribute


def reshape_target(node, new, old, edit):
    """Reshape/Expand shape: each explicit size becomes the output's new size (0 and -1 stay)."""
    out_shape = new.get(node.output[0])
    if out_shape is None or new.get(node.output[0]) == old.get(node.output[0]):
        return
    def fix(values):
        return [v if v in (0, -1) or not isinstance(s, int) else s for v, s in zip(values, out_shape)]
    edit.rewrite_vector(node, 1, fix)


def expand_shape(node, new, old, edit):
    """Expand target: explicit sizes > 1 become the output's new size. A target computed at run time
    (transformers' repeat-KV: `Where(Equal(t, -1), 1, t)` over the input's own shape) is replaced by a
    constant: 1 where the input carries the axis itself, the size where it broadcasts a static one."""
    out_shape = new.get(node.output[0])
    if out_shape is None or out_shape == old.get(node.output[0]):
        return
    def fix(values):
        shift = len(out_shape) - len(values)
        return [s if v > 1 and isinstance(s, int) else v for v, s in zip(values, out_shape[shift:])]
    try:
        edit.rewrite_vector(node, 1, fix)
    except ModelError:
        target = _constant_expand_target(new.get(node.input[0]), out_shape)
        if target is None:
            raise
        edit.set_sizes_input(node, 1, target)


def _constant_expand_target(x, out):
    if x is None:
        return None
    shift = len(out) - len(x)
    target = []
    for a, size in enumerate(out):
        carried = a >= shift and x[a - shift] == size
        if carried:
            target.append(1)
        elif isinstance(size, int):
            target.append(size)
        else:
            return None
    return target


def split_sizes(node, new, old, edit):
    axis = attribute(node, "axis", 0)
    sizes = [new[o][axis] for o in node.output]
    if sizes == [old[o][axis] for o in node.output]:
        return
    if len(node.input) > 1 and node.input[1]:
        edit.rewrite_vector(node, 1, lambda _: sizes)
    elif attribute(node, "split") is not None:
        edit.set_attr(node, "split", sizes)
    elif len(set(sizes)) > 1:  # an equal split (num_outputs) that the cut made unequal: give sizes explicitly
        edit.set_sizes_input(node, 1, sizes)
        edit.remove_attr(node, "num_outputs")


def slice_bounds(node, new, old, edit):
    """Slice with step 1 on a cut axis: new start = kept positions before it; new end = start + new size."""
    x, removed = node.input[0], edit.removed
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


def conv_group(weight_axis):
    """Conv (weight axis 1 holds input channels per group) or ConvTranspose (axis 0): `group` follows
    the cut channels."""
    def rewrite(node, new, old, edit):
        group = attribute(node, "group", 1)
        if group == 1:
            return
        w = node.input[1]
        channels = new[node.input[0]][1] if weight_axis == 1 else new[node.output[0]][1]
        if not isinstance(channels, int):  # a symbolic size: weight axis 0 spans every group, per-group widths kept
            edit.set_attr(node, "group", new[w][0] // (old[w][0] // group))
            return
        edit.set_attr(node, "group", channels // new[w][1])
    return rewrite


def resize_sizes(node, new, old, edit):
    if len(node.input) > 3 and node.input[3] and new[node.output[0]] != old[node.output[0]]:
        edit.rewrite_vector(node, 3, lambda values: list(new[node.output[0]]))


def pad_pads(node, new, old, edit):
    """Pad: a cut that removed padded positions of the output (zeros, cut with the channels they are
    added to) shrinks the pads by as many on that side; removed input positions need nothing."""
    x, out = node.input[0], node.output[0]
    if new.get(out) is None or new.get(out) == old.get(out):
        return
    from_input = len(node.input) > 1 and bool(node.input[1])
    pads = edit.vector(node, 1) if from_input else list(attribute(node, "pads"))
    rank = len(old[x])
    axes = edit.vector(node, 3)
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    n, changed = len(axes), list(pads)
    for k, axis in enumerate(axes):
        gone = edit.removed.get((out, axis))
        if gone is None:
            continue
        inner_end = pads[k] + old[x][axis]
        changed[k] = pads[k] - int(np.sum(gone < pads[k]))
        changed[k + n] = pads[k + n] - int(np.sum(gone >= inner_end))
        if changed[k] + new[x][axis] + changed[k + n] != new[out][axis]:
            raise ModelError(f"Pad '{node.name}': the cut of axis {axis} does not match its pads")
    if changed == pads:
        return
    if from_input:
        edit.rewrite_vector(node, 1, lambda _: changed)
    else:
        edit.set_attr(node, "pads", changed)
