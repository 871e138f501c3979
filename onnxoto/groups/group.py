"""What the analysis hands on: groups of zero-invariant groups (ZIGs) and the parameter slices they own."""
from dataclasses import dataclass, field

import numpy as np

PRODUCER, CONSUMER, FOLLOWER = "producer", "consumer", "follower"


@dataclass(frozen=True)
class ParamSlice:
    """The part of one initializer that a group's ZIGs own.

    index: int64 (num_zigs, k), positions along `axis` of ZIG z.
    role: producer (zeroed when pruned: makes the channel zero), consumer (reads the channel;
    only removed), follower (statistics that travel with the channel, e.g. BatchNorm mean/var).
    """

    name: str
    axis: int
    index: np.ndarray
    role: str


@dataclass(frozen=True)
class DimSlice:
    """One tensor axis (activation or initializer) the group runs through."""

    tensor: str
    axis: int
    index: np.ndarray  # int64 (num_zigs, k)


@dataclass
class Group:
    id: str
    num_zigs: int
    dims: list = field(default_factory=list)  # DimSlice, every tensor axis the group runs through
    slices: list = field(default_factory=list)  # ParamSlice, the initializer parts
    prunable: bool = True
    reason: str = ""
    layer: str = ""  # the node that reads the first producer slice, for people reading tables
    params: int = 0  # parameter elements removed if every ZIG were cut, linear estimate
    flops: float = 0.0  # FLOPs removed if every ZIG but none were cut, linear estimate: flops_per_zig * num_zigs
    flops_per_zig: float = 0.0
    params_per_zig: float = 0.0
    io: list = field(default_factory=list)  # graph inputs/outputs a cut changes (allow_io_change: a KV cache)
    # zeroed, the channels are a constant at these consumers, which fold it into their bias (groups.constant.Fold)
    folds: list = field(default_factory=list)
    constants: list = field(default_factory=list)  # (tensor, axis) of the constant channels they read, node order

    @property
    def producers(self):
        return [s for s in self.slices if s.role == PRODUCER]

    @property
    def initializers(self):
        return sorted({s.name for s in self.slices})
