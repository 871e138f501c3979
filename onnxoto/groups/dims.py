"""Tensor axes ("dims"), their couplings, and the connected components that become groups.

Two levels keep this fast on large models: identity couplings (index i <-> index i) merge whole
dims into classes with a union-find; index-level links (concat segments, reshape blocks, slices)
then join indices of classes, solved as connected components with numpy.
"""
import numpy as np


class DimSpace:
    def __init__(self):
        self.ids = {}  # (tensor, axis) -> dim id
        self.keys = []  # dim id -> (tensor, axis)
        self.sizes = []
        self.parent = []
        self.links = []  # (dim a, indices in a, dim b, indices in b), same length
        self.pins = {}  # dim id -> reason
        self.with_params = set()  # roots of classes that hold an initializer axis

    def dim(self, tensor, axis, size):
        key = (tensor, axis)
        if key not in self.ids:
            self.ids[key] = len(self.keys)
            self.keys.append(key)
            self.sizes.append(size)
            self.parent.append(len(self.parent))
        return self.ids[key]

    def find(self, d):
        root = d
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[d] != root:
            self.parent[d], d = root, self.parent[d]
        return root

    def same(self, a, b):
        """Index i of a is index i of b."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            assert self.sizes[ra] == self.sizes[rb], (self.keys[a], self.keys[b])
            self.parent[max(ra, rb)] = min(ra, rb)
            if ra in self.with_params or rb in self.with_params:
                self.with_params.add(min(ra, rb))

    def mark_param(self, d):
        self.with_params.add(self.find(d))

    def carries_params(self, d):
        """Whether an initializer axis is coupled index for index with d (so far)."""
        return self.find(d) in self.with_params

    def link(self, a, index_a, b, index_b):
        """Index index_a[k] of a is coupled to index index_b[k] of b."""
        self.links.append((a, np.asarray(index_a, np.int64), b, np.asarray(index_b, np.int64)))

    def pin(self, d, reason):
        self.pins.setdefault(d, reason)

    def solve(self):
        """Return Components: every class of dims and the component of each of its indices."""
        roots = np.array([self.find(d) for d in range(len(self.keys))], np.int64)
        classes = np.unique(roots)
        offset = np.zeros(len(self.keys), np.int64)
        sizes = np.array(self.sizes, np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes[classes])[:-1]])
        offset[classes] = starts
        total = int(sizes[classes].sum()) if len(classes) else 0
        if self.links:
            a = np.concatenate([offset[roots[la]] + ia for la, ia, _, _ in self.links])
            b = np.concatenate([offset[roots[lb]] + ib for _, _, lb, ib in self.links])
        else:
            a = b = np.zeros(0, np.int64)
        labels = connected_components(total, a, b)
        pinned_classes = {}
        for d, reason in self.pins.items():
            pinned_classes.setdefault(int(roots[d]), reason)
        return Components(self, roots, classes, offset, labels, pinned_classes)


class Components:
    """The solved couplings: dims grouped into classes, class indices labelled by component."""

    def __init__(self, space, roots, classes, offset, labels, pinned_classes):
        self.space, self.roots, self.classes = space, roots, classes
        self.offset, self.labels, self.pinned_classes = offset, labels, pinned_classes

    def class_of(self, d):
        return int(self.roots[d])

    def class_labels(self, c):
        start = self.offset[c]
        return self.labels[start:start + self.space.sizes[c]]

    def members(self):
        """class id -> list of dim ids in it."""
        out = {}
        for d, c in enumerate(self.roots):
            out.setdefault(int(c), []).append(d)
        return out


def connected_components(n, a, b):
    """Label of each of n nodes = smallest node id in its component (hook and pointer-jump)."""
    label = np.arange(n, dtype=np.int64)
    if len(a) == 0:
        return label
    while True:
        la, lb = label[a], label[b]
        if np.array_equal(la, lb):
            return label
        low = np.minimum(la, lb)
        np.minimum.at(label, la, low)
        np.minimum.at(label, lb, low)
        while True:
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
