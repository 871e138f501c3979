"""Data-parallel training over MPI (or NCCL on CUDA): every rank holds the whole model, reads its part of
each global batch, and averages gradients in place before the optimizer step, so ranks stay identical."""
from .comm import Communicator, DistError, param_checksum
from .data import shard, source_for
from .launch import communicator, launched_size

__all__ = ["Communicator", "DistError", "communicator", "launched_size", "param_checksum", "shard", "source_for"]
