"""One flat buffer per dtype for a fused all-reduce: pack the weighted gradients, reduce once, unpack."""
import numpy as np


class FlatBuffer:
    """Allocated once for a fixed list of arrays (shapes and dtype); the trailing slots carry scalars
    and the weight, so that the gradients, the loss and the sample count travel in one call."""

    def __init__(self, arrays, n_scalars, xp=np):
        self.sizes = [int(a.size) for a in arrays]
        self.dtype = arrays[0].dtype if arrays else np.dtype(np.float32)
        self.n_scalars = n_scalars
        self.total = sum(self.sizes)
        self.data = xp.empty(self.total + n_scalars + 1, dtype=self.dtype)
        self.xp = xp

    def fits(self, arrays, n_scalars):
        return n_scalars == self.n_scalars and [int(a.size) for a in arrays] == self.sizes and \
            all(a.dtype == self.dtype for a in arrays)

    def pack(self, arrays, weight, scalars):
        """data = [w·a₀, w·a₁, …, w·s₀, …, w]"""
        xp, offset = self.xp, 0
        for array, size in zip(arrays, self.sizes):
            xp.multiply(array.reshape(-1), weight, out=self.data[offset:offset + size])
            offset += size
        for k, value in enumerate(scalars):
            self.data[offset + k] = value * weight
        self.data[-1] = weight

    def unpack(self, arrays):
        """Divide the sums by the summed weight, back into the arrays in place; returns (scalars, weight)."""
        xp, offset = self.xp, 0
        weight = float(self.data[-1])
        if weight == 0:
            raise ValueError("no rank had samples in this batch")
        for array, size in zip(arrays, self.sizes):
            xp.divide(self.data[offset:offset + size], weight, out=array.reshape(-1))
            offset += size
        scalars = tuple(float(v) / weight for v in self.data[offset:offset + self.n_scalars].tolist())
        return scalars, weight
