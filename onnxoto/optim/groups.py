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
    divisible: int = 1  # kept count a multiple of this (when possible)
    prunable: bool = True
    erasable: bool = False  # a whole branch (one ZIG): may be pruned entirely, against its own budget
    join: str = ""  # erasable branches sharing a join are exclusive: the join keeps one live input


class FlatIndex:
    """Per group, per parameter: flat element indices of each ZIG, shape (num_zigs, m), on the params' device.

    Gathering x[index] gives every ZIG's elements at once: no Python loop over ZIGs."""

    def __init__(self, groups, params, xp):
        self.per_group = []  # [(group, [(param name, flat index array (num_zigs, m))])]
        for g in groups:
            parts = []
            for s in g.slices:
                shape = params[s.param].shape
                grid = np.moveaxis(np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape), s.axis, 0)
                flat = grid[np.asarray(s.index)].reshape(g.num_zigs, -1)
                parts.append((s.param, xp.asarray(flat)))
            self.per_group.append((g, parts))

    def gather(self, arrays, k):
        """(num_zigs, total elements of a ZIG) for group k, from a name -> array dict."""
        xp_parts = [arrays[name].reshape(-1)[flat] for name, flat in self.per_group[k][1]]
        xp = _module(xp_parts[0])
        return xp.concatenate(xp_parts, axis=1)

    def elements(self, k, zigs):
        """[(param name, flat indices)] of the given ZIGs of group k."""
        return [(name, flat[zigs].reshape(-1)) for name, flat in self.per_group[k][1]]


def _module(array):
    from .backend import array_module
    return array_module(array)
