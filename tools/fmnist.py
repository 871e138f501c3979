"""Read Fashion-MNIST IDX files (optionally gzipped) into numpy arrays."""
import gzip
import os

import numpy as np

DEFAULT_DIRS = ("/usr/share/datasets/fashion-mnist", "/tmp/fmnist/x/usr/share/datasets/fashion-mnist")


def read_idx(path):
    """One IDX file as an array: uint8 images (n, 28, 28) or labels (n,)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]  # magic: 0, 0, dtype code (0x08 = uint8), number of dims
    assert data[:3] == b"\x00\x00\x08", f"{path}: not a uint8 IDX file"
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def find_dir(root=None):
    for d in ([root] if root else []) + [os.environ.get("FMNIST_DIR", "")] + list(DEFAULT_DIRS):
        if d and os.path.exists(os.path.join(d, "train-images-idx3-ubyte.gz")):
            return d
    raise FileNotFoundError("Fashion-MNIST IDX files not found: apt-get install dataset-fashion-mnist, "
                            "or apt-get download it, dpkg -x it and set FMNIST_DIR")


def load(split, root=None):
    """(images uint8 (n, 28, 28), labels int64 (n,)) for split 'train' or 't10k'."""
    d = find_dir(root)
    x = read_idx(os.path.join(d, f"{split}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(d, f"{split}-labels-idx1-ubyte.gz")).astype(np.int64)
    return x, y
