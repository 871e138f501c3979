"""What the optimizers know of the model: groups of ZIGs as index arrays into parameters."""
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ZigSlice:
    """The part of one parameter that a group's ZIGs own: index (num_zigs, k) positions along `axis`."""

    param: str
    axis: int
    index: np.ndarray


@dataclass
class ZigGroup:
    id: str
    num_zigs: int
    slices: list = field(default_factory=list)  # producer-side ZigSlices: zeroed when a ZIG is pruned
    flops_per_zig: float = 0.0
    params_per_zig: float = 0.0
    round_to: int = 1  # kept count a multiple of this, or below it of half of it (select.allowed_widths)
    narrow: bool = True  # whether widths below round_to are allowed at all
    prunable: bool = True
    erasable: bool = False  # a whole branch (one ZIG): may be pruned entirely, against its own budget
    join: str = ""  # erasable branches sharing a join are exclusive: the join keeps one live input
    target: float | None = None  # its own sparsity target (--group-target), outside the global budget


class Band:
    """Elements of one parameter: `positions` along `axis`, addressed through a (pre, n, post) view, so
    zeroing or scaling them moves contiguous runs of `post` elements instead of single flat indices."""

    __slots__ = ("name", "axis", "shape3", "positions")

    def __init__(self, name, axis, shape3, positions):
        self.name, self.axis, self.shape3, self.positions = name, axis, shape3, positions

    def view(self, array):
        return array.reshape(self.shape3)  # a view: ZigIndex checked the buffers are contiguous

    def fill(self, array, value):
        self.view(array)[:, self.positions, :] = value

    def scale(self, array, factor):
        view = self.view(array)
        view[:, self.positions, :] *= factor  # positions are unique: gather, scale, scatter is exact

    def take(self, array):
        """A copy of the elements, shape (pre, len(positions), post)."""
        return self.view(array)[:, self.positions, :]

    def put(self, array, values):
        self.view(array)[:, self.positions, :] = values


class ZigIndex:
    """Per group, per producer slice: the ZIGs' positions along the slice's axis, (num_zigs, k), on the
    params' device. Every operation covers all ZIGs at once: no Python loop over ZIGs."""

    def __init__(self, groups, params, xp):
        self.xp = xp
        self.per_group = []  # [(group, [(param name, axis, (pre, n, post), positions (num_zigs, k))])]
        for g in groups:
            parts = []
            for s in g.slices:
                if not params[s.param].flags.c_contiguous:  # reshape would copy: writes would be lost
                    raise ValueError(f"parameter {s.param}: buffer is not C-contiguous, cannot update it in place")
                shape = tuple(params[s.param].shape)
                axis = s.axis % len(shape)
                shape3 = (_prod(shape[:axis]), shape[axis], _prod(shape[axis + 1:]))
                positions = np.asarray(s.index, np.int64).reshape(g.num_zigs, -1)
                parts.append((s.param, axis, shape3, xp.asarray(positions)))
            self.per_group.append((g, parts))

    def gather(self, arrays, k, zigs=None):
        """(ZIGs, elements of a ZIG) for group k (all its ZIGs, or those in `zigs`), a copy."""
        xp, cols = self.xp, []
        for name, _, shape3, positions in self.per_group[k][1]:
            chosen = positions if zigs is None else positions[zigs]
            block = arrays[name].reshape(shape3)[:, chosen, :]  # (pre, Z, k, post)
            cols.append(xp.moveaxis(block, 1, 0).reshape(chosen.shape[0], -1))
        return xp.concatenate(cols, axis=1) if len(cols) > 1 else cols[0]

    def scatter(self, arrays, k, zigs, values):
        """Inverse of gather(arrays, k, zigs): write (ZIGs, elements) values back in place."""
        xp, start = self.xp, 0
        for name, _, shape3, positions in self.per_group[k][1]:
            chosen = positions[zigs]
            pre, post = shape3[0], shape3[2]
            width = pre * chosen.shape[1] * post
            block = values[:, start:start + width].reshape(chosen.shape[0], pre, chosen.shape[1], post)
            arrays[name].reshape(shape3)[:, chosen, :] = xp.moveaxis(block, 0, 1)
            start += width

    def square_norms(self, arrays, k):
        """(num_zigs,) squared L2 norm of each ZIG of group k, reduced in place (no gathered copy)."""
        xp, total = self.xp, None
        for name, _, shape3, positions in self.per_group[k][1]:
            view = arrays[name].reshape(shape3)
            per_position = xp.einsum("ijk,ijk->j", view, view)
            part = per_position[positions].sum(axis=1)
            total = part if total is None else total + part
        return total

    def bands(self, k, zigs):
        """[((param name, axis), Band)] holding the given ZIGs of group k."""
        return [((name, axis), Band(name, axis, shape3, positions[zigs].reshape(-1)))
                for name, axis, shape3, positions in self.per_group[k][1]]


def merge_bands(pairs, xp):
    """One Band per (param, axis) from [((param, axis), Band)], positions sorted (memory order)."""
    merged = {}
    for key, band in pairs:
        merged.setdefault(key, []).append(band)
    out = []
    for (name, axis), parts in merged.items():
        positions = xp.sort(xp.concatenate([b.positions for b in parts])) if len(parts) > 1 else parts[0].positions
        out.append(Band(name, axis, parts[0].shape3, positions))
    return out


def _prod(values):
    out = 1
    for v in values:
        out *= int(v)
    return out

