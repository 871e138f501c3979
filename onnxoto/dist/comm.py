"""The collective interface the prune loop calls, and its single-process implementation (no-ops)."""
import hashlib

import numpy as np

from ..errors import OnnxotoError


class DistError(OnnxotoError):
    """Ranks cannot go on together: a rank died or hangs, or their parameters diverged."""


class Communicator:
    """One process, world of one: every collective returns its input. Subclasses talk to other ranks."""

    rank, size = 0, 1

    @property
    def is_root(self):
        """Rank 0 alone writes checkpoints, the model and the report."""
        return self.rank == 0

    def allreduce_mean(self, arrays, weight=1.0, scalars=()):
        """Replace every array, in place, by its weighted mean over ranks (weight: this rank's sample
        count); returns `scalars` averaged with the same weights. One process: nothing to do."""
        return tuple(float(s) for s in scalars)

    def mean(self, value, weight=1.0):
        """A float averaged over ranks, weighted (CRIC's loss measurements)."""
        return float(value)

    def total(self, value):
        """A count summed over ranks."""
        return value

    def check_same(self, checksum, what="parameters"):
        """Stop with DistError unless every rank passes the same checksum (bytes)."""

    def fail(self):
        """This rank stops taking part: make sure the others are not left waiting on it."""

    def close(self):
        """Release the collective resources (nothing for one process)."""


def param_checksum(params):
    """A digest of the exact bytes of every parameter, in name order (CPU or CuPy arrays)."""
    digest = hashlib.sha256()
    for name in sorted(params):
        array = params[name]
        array = array.get() if hasattr(array, "get") and not isinstance(array, np.ndarray) else array
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.digest()
