"""Collectives over NCCL (CuPy's cupy.cuda.nccl) for CUDA buffers, bootstrapped over MPI: rank 0 makes
the unique id and mpi4py broadcasts it. Same interface and flat buffer as MpiCommunicator.
UNTESTED: no GPU (and no CUDA 11.8 onnxruntime-training) on the machines this was written on."""
import time

import numpy as np

from .comm import DistError
from .flat import FlatBuffer
from .mpi import DEFAULT_TIMEOUT_S, MpiCommunicator


class NcclCommunicator(MpiCommunicator):
    """Gradients reduce on the GPU through NCCL; small host-side values (means, checksums) over MPI."""

    def __init__(self, timeout=DEFAULT_TIMEOUT_S, comm=None):
        super().__init__(timeout=timeout, comm=comm)
        import cupy
        from cupy.cuda import nccl

        self.cupy, self.nccl = cupy, nccl
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.comm.bcast(uid, root=0)
        self.nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)

    def allreduce_mean(self, arrays, weight=1.0, scalars=()):
        started = time.perf_counter()
        arrays = list(arrays)
        if not arrays or isinstance(arrays[0], np.ndarray):  # host buffers: the MPI path
            return super().allreduce_mean(arrays, weight, scalars)
        flat = self._device_buffer(arrays, len(scalars))
        flat.pack(arrays, weight, scalars)
        # onnxruntime's backward ran on the default stream: the reduction waits for it, unpacking for the reduction
        self.stream.wait_event(self.cupy.cuda.get_current_stream().record())
        data = flat.data
        self.nccl_comm.allReduce(data.data.ptr, data.data.ptr, data.size, _nccl_type(self.nccl, data.dtype),
                                 self.nccl.NCCL_SUM, self.stream.ptr)
        self._wait_stream("gradient all-reduce (NCCL)")
        averaged, _ = flat.unpack(arrays)
        self.reduce_seconds += time.perf_counter() - started
        return averaged

    def _device_buffer(self, arrays, n_scalars):
        key = ("cuda", arrays[0].dtype)
        flat = self._flat.get(key)
        if flat is None or not flat.fits(arrays, n_scalars):
            flat = self._flat[key] = FlatBuffer(arrays, n_scalars, xp=self.cupy)
        return flat

    def _wait_stream(self, what):
        """Poll the stream against the deadline; on timeout abort the NCCL communicator (it would block)."""
        self.calls += 1
        done = self.stream.record()
        deadline = time.monotonic() + self.timeout
        pause = 1e-6
        while not done.done:
            if time.monotonic() > deadline:
                self.failed = True
                self.nccl_comm.abort()
                raise DistError(f"rank {self.rank}: {what} #{self.calls} got no answer from the other ranks in "
                                f"{self.timeout:g} s: a rank died or hangs; stopping all")
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)

    def close(self):
        if not self.failed:
            self.nccl_comm.destroy()
        super().close()


def _nccl_type(nccl, dtype):
    return {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
            np.dtype(np.float16): nccl.NCCL_FLOAT16}[np.dtype(dtype)]
