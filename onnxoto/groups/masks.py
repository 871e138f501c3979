"""Keep-masks: which ZIGs of each group stay, and what that means for every tensor axis."""
import numpy as np


def removed_positions(groups, keep):
    """(tensor, axis) -> sorted int64 positions removed, given keep: group id -> bool (num_zigs,)."""
    removed = {}
    for g in groups:
        mask = keep.get(g.id)
        if mask is None or mask.all():
            continue
        for dim in g.dims:
            removed.setdefault((dim.tensor, dim.axis), []).append(dim.index[~mask].ravel())
    return {key: np.unique(np.concatenate(parts)) for key, parts in removed.items()}


def reduced_shapes(shapes, removed):
    """Shapes after cutting: each axis shrinks by the positions removed from it."""
    out = dict(shapes)
    for (tensor, axis), positions in removed.items():
        shape = out.get(tensor)
        if shape is not None and axis < len(shape) and isinstance(shape[axis], int):
            out[tensor] = shape[:axis] + (shape[axis] - len(positions),) + shape[axis + 1:]
    return out


def keep_all(groups):
    return {g.id: np.ones(g.num_zigs, bool) for g in groups}
