"""The array module of a buffer: numpy on the CPU, CuPy for CUDA buffers (same code either way)."""
import numpy as np

try:  # CuPy is optional: only the GPU build of onnxoto installs it
    import cupy
except Exception:  # pragma: no cover - depends on the machine
    cupy = None


def array_module(array):
    if cupy is not None:
        return cupy.get_array_module(array)
    return np


def to_numpy(array):
    return array.get() if hasattr(array, "get") and not isinstance(array, np.ndarray) else np.asarray(array)
