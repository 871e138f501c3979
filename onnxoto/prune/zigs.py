"""The analysis' groups as the optimizer sees them: index arrays into trainable parameters."""
from fnmatch import fnmatchcase

import numpy as np

from ..groups import PRODUCER
from ..optim import ZigGroup, ZigSlice


def optimizer_groups(analysis, trainable, round_to, targets=None, narrow=True):
    """One ZigGroup per prunable group whose producer slices are all trainable parameters; `targets`
    (glob -> fraction, --group-target): the first glob matching a group's id or layer gives its own target."""
    out = []
    trainable = set(trainable)
    for g in analysis.prunable:
        producers = [s for s in g.slices if s.role == PRODUCER]
        if not producers or any(s.name not in trainable for s in producers):
            continue  # a producer we cannot train to zero: the group stays dense
        slices = [ZigSlice(s.name, s.axis, np.ascontiguousarray(s.index, dtype=np.int64)) for s in producers]
        out.append(ZigGroup(id=g.id, num_zigs=g.num_zigs, slices=slices, flops_per_zig=g.flops_per_zig,
                            params_per_zig=g.params_per_zig, round_to=round_to, narrow=narrow,
                            target=target_of(g, targets or {})))
    return out


def target_of(group, targets):
    return next((f for pattern, f in targets.items()
                 if fnmatchcase(group.id, pattern) or fnmatchcase(group.layer, pattern)), None)


def unit_groups(analysis, trainable):
    """One single-ZIG group per erasable branch: all of its trainable weights (statistics such as
    BatchNorm's running mean/var need not be zero: the pipeline checks the trained model itself),
    and for a Concat branch the slices that zero its channels downstream, which must all train."""
    out = []
    trainable = set(trainable)
    for unit in analysis.erasable:
        weights = [p for p in unit.params if p in trainable]
        if not weights or any(s.name not in trainable for s in unit.zero_slices):
            continue
        slices = [ZigSlice(p, 0, np.arange(analysis.model.shapes[p][0], dtype=np.int64)[None, :]) for p in weights]
        slices += [ZigSlice(s.name, s.axis, np.ascontiguousarray(s.index.reshape(1, -1), dtype=np.int64))
                   for s in unit.zero_slices]
        out.append(ZigGroup(id=unit.id, num_zigs=1, slices=slices, flops_per_zig=float(unit.flops),
                            params_per_zig=float(unit.param_count), erasable=True, join=unit.join))
    return out


def in_training_layout(zig_groups, param_map):
    """The same groups over the training graph's parameters (a ConvTranspose trains as a Conv:
    another name, swapped axes; see train.forms)."""
    for g in zig_groups:
        slices = []
        for s in g.slices:
            name, axis, channels = param_map.index_to_training(s.param, s.axis, s.index.ravel())
            slices.append(ZigSlice(name, axis, np.asarray(channels, np.int64).reshape(s.index.shape)))
        g.slices = slices
    return zig_groups
