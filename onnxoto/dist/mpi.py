"""Collectives over MPI (mpi4py) for CPU buffers: non-blocking, polled against a deadline, so that a
rank that died or hangs stops the others with a message instead of a hang."""
import atexit
import sys
import time

import numpy as np

from .comm import Communicator, DistError
from .flat import FlatBuffer

DEFAULT_TIMEOUT_S = 300.0


class MpiCommunicator(Communicator):
    def __init__(self, timeout=DEFAULT_TIMEOUT_S, comm=None):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = (comm or MPI.COMM_WORLD).Dup()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = float(timeout)
        self.failed = False
        self.calls = 0  # collectives issued: named in timeout messages
        self.reduce_seconds = 0.0  # time in allreduce_mean (pack, reduce, unpack): the benchmark reads it
        self._flat = {}
        atexit.register(self._abort_if_failed)

    # --- the interface ----------------------------------------------------------------------
    def allreduce_mean(self, arrays, weight=1.0, scalars=()):
        started = time.perf_counter()
        arrays = list(arrays)
        flat = self._buffer(arrays, len(scalars))
        flat.pack(arrays, weight, scalars)
        self._allreduce(flat.data, "gradient all-reduce")
        averaged, _ = flat.unpack(arrays)
        self.reduce_seconds += time.perf_counter() - started
        return averaged

    def mean(self, value, weight=1.0):
        pair = np.array([value * weight, weight], np.float64)
        self._allreduce(pair, "mean")
        return float(pair[0] / pair[1])

    def total(self, value):
        cell = np.array([value], np.float64)
        self._allreduce(cell, "sum")
        return type(value)(cell[0])

    def check_same(self, checksum, what="parameters"):
        mine = np.frombuffer(bytes(checksum), np.uint8)
        everyone = np.empty((self.size, mine.size), np.uint8)
        self._wait(self.comm.Iallgather(mine, everyone), "checksum exchange")
        differing = [r for r in range(self.size) if not np.array_equal(everyone[r], everyone[0])]
        if differing:
            raise DistError(f"{what} diverged across ranks: rank{'s' * (len(differing) > 1)} "
                            f"{', '.join(map(str, differing))} differ from rank 0 (non-deterministic reduction "
                            "or a rank-dependent step); stopping")

    def fail(self):
        self.failed = True

    def close(self):
        if not self.failed and self.comm is not None:
            self.comm.Free()
            self.comm = None

    # --- mechanics ---------------------------------------------------------------------------
    def _buffer(self, arrays, n_scalars):
        dtype = arrays[0].dtype if arrays else np.dtype(np.float32)
        flat = self._flat.get(dtype)
        if flat is None or not flat.fits(arrays, n_scalars):
            flat = self._flat[dtype] = FlatBuffer(arrays, n_scalars)
        return flat

    def _allreduce(self, buffer, what):
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM), what)

    def _wait(self, request, what):
        """Poll `request` (MPI progresses non-blocking collectives inside Test) until done or the deadline."""
        self.calls += 1
        deadline = time.monotonic() + self.timeout
        pause = 1e-6
        while not request.Test():
            if time.monotonic() > deadline:
                self.failed = True
                raise DistError(f"rank {self.rank}: {what} #{self.calls} got no answer from the other ranks in "
                                f"{self.timeout:g} s: a rank died or hangs; stopping all "
                                "(ONNXOTO_DIST_TIMEOUT sets the limit)")
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)  # short waits stay fast; long ones leave the cores to the others

    def _abort_if_failed(self):
        """At exit after a failure: MPI_Finalize would wait for ranks that never come; abort the job."""
        if self.failed:
            sys.stderr.flush()
            sys.stdout.flush()
            self.MPI.COMM_WORLD.Abort(2)
