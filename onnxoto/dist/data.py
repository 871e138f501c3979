"""Each rank's part of the data. Files (.npz, .npy folders) are split per global batch: every rank
draws the same shuffled order and takes its contiguous share of each batch, so the global batch is
the single-process one. A caller's iterable is the caller's shard: it is asked for with (rank, size)."""
import os

import numpy as np

from ..errors import OptionError
from ..train import LABELS, Dataset


def shard(dataset, comm, batch_size, presharded=False):
    """The rank's view of `dataset`; unchanged in a world of one."""
    if comm.size == 1:
        return dataset
    if batch_size < comm.size:
        raise OptionError(f"--batch-size {batch_size} is smaller than the {comm.size} ranks: each global batch "
                          "is split across them")
    if presharded:
        return LocalShard(dataset, comm.rank, comm.size, comm.total(len(dataset)))
    return GlobalBatchShard(dataset, comm.rank, comm.size)


def part_of(count, rank, size):
    """Rows [start, stop) of a batch of `count` that rank takes (the first count % size ranks one more)."""
    base, extra = divmod(count, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class _Shard:
    """What the prune pipeline reads of a Dataset, with `len` the global sample count (schedules
    count global steps) and `batches` yielding this rank's rows, possibly none."""

    def __init__(self, dataset, rank, size):
        self.dataset, self.rank, self.size = dataset, rank, size
        self.arrays, self.labels, self.source = dataset.arrays, dataset.labels, dataset.source
        self.constants = dataset.constants

    @property
    def has_labels(self):
        return self.labels is not None

    def _take(self, rows):
        # fancy indexing on a memory-mapped .npy reads only these rows: no rank copies the whole file
        batch = {name: np.ascontiguousarray(array[rows]) for name, array in self.arrays.items()}
        batch.update(self.constants)
        if self.labels is not None:
            batch[LABELS] = np.ascontiguousarray(self.labels[rows])
        return batch


class GlobalBatchShard(_Shard):
    """The whole data on every rank (a .npz in memory, .npy folders memory-mapped); this rank's share of
    each global batch, in the single process's order."""

    def __len__(self):
        return len(self.dataset)

    def batches(self, batch_size, shuffle=False, rng=None):
        # Dataset.batches itself draws the order and cuts the batches, over an index array: one definition
        rows = Dataset({"rows": np.arange(len(self.dataset))})
        for batch in rows.batches(batch_size, shuffle=shuffle, rng=rng):
            start, stop = part_of(len(batch["rows"]), self.rank, self.size)
            yield self._take(batch["rows"][start:stop])


class LocalShard(_Shard):
    """The caller's shard on each rank: this rank's share of each global batch comes from its own rows,
    for as many steps as the global data needs (a rank that runs out contributes no samples)."""

    def __init__(self, dataset, rank, size, global_count):
        super().__init__(dataset, rank, size)
        self.global_count = global_count

    def __len__(self):
        return self.global_count

    def batches(self, batch_size, shuffle=False, rng=None):
        start, stop = part_of(batch_size, self.rank, self.size)
        local = Dataset({"rows": np.arange(len(self.dataset))})
        parts = local.batches(max(stop - start, 1), shuffle=shuffle, rng=rng)
        for _ in range(-(-self.global_count // batch_size)):
            rows = next(parts, {"rows": np.zeros(0, np.int64)})["rows"]
            yield self._take(rows)


def source_for(data, comm):
    """(what load_data reads, whether it is already this rank's shard). Paths are split here; an
    iterable is the caller's shard; a callable is called with (rank, size) to make one."""
    if isinstance(data, (str, os.PathLike)):
        return data, False
    if callable(data):
        data = data(comm.rank, comm.size)
    return data, comm.size > 1
