"""Stage 2: pruning groups by axis coupling (DESIGN.md §3) and the cost model."""
from dataclasses import dataclass, field

import numpy as np

from .build import build_groups
from .constant import Fold, channel_constants, made_by_folds, zeroed_values
from .cost import model_cost
from .erase import ErasableUnit, find_erasable
from .group import CONSUMER, FOLLOWER, PRODUCER, DimSlice, Group, ParamSlice
from .masks import keep_all, reduced_shapes, removed_positions

__all__ = ["Analysis", "analyze", "Group", "ParamSlice", "DimSlice", "PRODUCER", "CONSUMER", "FOLLOWER",
           "removed_positions", "reduced_shapes", "keep_all", "prunable_params", "model_cost", "ErasableUnit",
           "Fold", "channel_constants", "zeroed_values"]


@dataclass
class Analysis:
    model: object  # graph.Model
    groups: list = field(default_factory=list)
    params: int = 0
    flops: int = 0
    erasable: list = field(default_factory=list)  # ErasableUnit: branches (of an Add or a Concat) removable whole
    allow_io_change: bool = False  # groups may change graph inputs/outputs (Group.io)

    @property
    def prunable(self):
        return [g for g in self.groups if g.prunable]

    def group(self, gid):
        return next(g for g in self.groups if g.id == gid)

    def predict_cost(self, keep):
        """(params, flops) of the model cut by `keep` (group id -> bool per ZIG)."""
        shapes = reduced_shapes(self.model.shapes, removed_positions(self.groups, keep))
        params, flops = model_cost(self.model, shapes)
        made_params, made_flops = made_by_folds(self.model, self.groups, keep, shapes)
        return params + made_params, flops + made_flops


def analyze(model, allow_io_change=False):
    """Groups of a normalized graph.Model, with per-ZIG params and FLOPs. allow_io_change: a group may
    change graph inputs and outputs it reaches together (a KV cache), see build.couple."""
    groups = build_groups(model, allow_io_change)
    params, flops = model_cost(model)
    analysis = Analysis(model, groups, params, flops, find_erasable(model, groups), allow_io_change)
    readers = {i: n for n in reversed(model.graph.node) for i in n.input}
    for g in groups:
        first = (g.producers or g.slices)[0].name
        g.layer = readers[first].name if first in readers else ""
        if g.prunable:
            one = {g.id: np.arange(g.num_zigs) != 0}
            cut_params, cut_flops = analysis.predict_cost(one)
            g.params_per_zig, g.flops_per_zig = float(params - cut_params), float(flops - cut_flops)
        else:
            g.params_per_zig = sum(_slice_numel(model, s) for s in g.slices) / g.num_zigs
        g.params, g.flops = int(round(g.params_per_zig * g.num_zigs)), g.flops_per_zig * g.num_zigs
    return analysis


def prunable_params(analysis):
    """Parameter elements that some prunable group could remove (each element counted once)."""
    touched = {}
    for g in analysis.prunable:
        for s in g.slices:
            touched.setdefault(s.name, {}).setdefault(s.axis, set()).update(s.index.ravel().tolist())
    total = 0
    for name, axes in touched.items():
        shape = analysis.model.shapes[name]
        untouched = int(np.prod([size - len(axes.get(a, ())) for a, size in enumerate(shape)]))
        total += int(np.prod(shape)) - untouched
    return total


def _slice_numel(model, s):
    shape = model.shapes[s.name]
    return int(np.prod(shape)) // shape[s.axis] * s.index.size
