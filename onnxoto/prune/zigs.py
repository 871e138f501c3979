"""The analysis' groups as the optimizer sees them: index arrays into trainable parameters."""
import numpy as np

from ..groups import PRODUCER
from ..optim import ZigGroup, ZigSlice


def optimizer_groups(analysis, trainable, round_to=1):
    """One ZigGroup per prunable group whose producer slices are all trainable parameters."""
    out = []
    trainable = set(trainable)
    for g in analysis.prunable:
        producers = [s for s in g.slices if s.role == PRODUCER]
        if not producers or any(s.name not in trainable for s in producers):
            continue  # a producer we cannot train to zero: the group stays dense
        slices = [ZigSlice(s.name, s.axis, np.ascontiguousarray(s.index, dtype=np.int64)) for s in producers]
        out.append(ZigGroup(id=g.id, num_zigs=g.num_zigs, slices=slices, flops_per_zig=g.flops_per_zig,
                            params_per_zig=g.params_per_zig, divisible=round_to))
    return out
