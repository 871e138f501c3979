"""What a rule sees of one node, and the calls it makes to couple axes, pin them and state zero behaviour."""
import numpy as np
from onnx import numpy_helper

from ..graph import display_name, node_reads, producers
from ..ops import ADD, attribute
SENTINEL = None  # an ADD source that is never zero (a broadcast constant, a non-zero-preserving op)


class Record:
    """Everything the rules state about a graph, beyond the couplings held in DimSpace."""

    def __init__(self):
        self.sources = {}  # output dim -> [(input dim or SENTINEL, role)]
        self.order = {}  # output dim -> position in node order
        self.contracts = []  # (node label, [dims], node): indices summed over; each must be zero in one of the dims
        # (or a constant the node folds into its bias, groups.constant)
        self.roles = {}  # param dim -> "consumer" | "follower"
        self.divisors = []  # (node label, dim): values divided by, which must not become zero
        self.zeros = set()  # dims that are zero whatever the weights (a zero Pad's padded positions)
        self.io_inputs = {}  # graph input dim -> reason (allow_io_change: recorded instead of pinned)
        self.io_outputs = {}  # graph output dim -> reason
        self.producers = None  # tensor -> node, made on first use (NodeContext.producer)


class NodeContext:
    def __init__(self, node, model, space, record):
        self.node, self.model, self.space, self.record = node, model, space, record
        self.op = node.op_type
        self.label = f"{node.op_type} '{display_name(node)}'"

    # --- reading the node ---
    def attr(self, name, default=None):
        return attribute(self.node, name, default)

    def input(self, i):
        return self.node.input[i] if i < len(self.node.input) and self.node.input[i] else None

    def output(self, i=0):
        return self.node.output[i] if i < len(self.node.output) and self.node.output[i] else None

    def shape(self, tensor):
        return self.model.shapes.get(tensor) if tensor else None

    def rank(self, tensor):
        shape = self.shape(tensor)
        return None if shape is None else len(shape)

    def const(self, tensor):
        """Values of an initializer input, or None when it is computed at run time."""
        init = self.model.initializers.get(tensor) if tensor else None
        return None if init is None else numpy_helper.to_array(init)

    def axes_from(self, input_index, attr_name="axes"):
        """Axes given by an input (newer opsets) or an attribute (older ones); None when not constant."""
        value = self.const(self.input(input_index)) if self.input(input_index) else None
        if value is not None:
            return [int(v) for v in np.atleast_1d(value)]
        if self.input(input_index):
            return None
        return self.attr(attr_name)

    def producer(self, tensor):
        """The node that writes `tensor`, or None (a graph input, an initializer)."""
        if self.record.producers is None:
            self.record.producers = producers(self.model.graph)
        return self.record.producers.get(tensor)

    def is_param(self, tensor):
        return bool(tensor) and self.model.is_param(tensor)

    # --- dims ---
    def d(self, tensor, axis):
        """The dim id of a float tensor's axis, or None when it cannot carry channels (size 1, unknown)."""
        shape = self.shape(tensor)
        if shape is None or not self.model.is_float(tensor):
            return None
        if axis < 0:
            axis += len(shape)
        if not 0 <= axis < len(shape):
            return None
        size = shape[axis]
        if not isinstance(size, int) or size <= 1:
            return None
        d = self.space.dim(tensor, axis, size)
        if self.model.is_param(tensor):
            self.space.mark_param(d)
        return d

    def dims(self, tensor):
        rank = self.rank(tensor)
        return [] if rank is None else [self.d(tensor, a) for a in range(rank)]

    # --- statements ---
    def same(self, a, b, role=None):
        """Couple a (input side) and b (output side) index for index; b's zero source is a when role is given."""
        if a is None or b is None:
            return
        self.space.same(a, b)
        if role:
            self.source(b, a, role)

    def block(self, coarse, fine, inner, role=None, fine_is_output=True):
        """Index h of `coarse` is the block [h*inner, (h+1)*inner) of `fine`."""
        if coarse is None or fine is None:
            return
        n = self.space.sizes[coarse]
        self.space.link(coarse, np.repeat(np.arange(n), inner), fine, np.arange(n * inner))
        if role:
            out, src = (fine, coarse) if fine_is_output else (coarse, fine)
            self.source(out, src, role)

    def offset(self, part, whole, offset, step=1, role=None, whole_is_output=True):
        """Index i of `part` is index offset + i*step of `whole` (concat segments, split pieces, slices)."""
        if part is None or whole is None:
            return
        n = self.space.sizes[part]
        self.space.link(part, np.arange(n), whole, offset + step * np.arange(n))
        if role:
            out, src = (whole, part) if whole_is_output else (part, whole)
            self.source(out, src, role)

    def strided(self, part, whole, sizes, k, role=None, whole_is_output=True):
        """Axis k of a run of axes `sizes` flattened into `whole`: index i of `part` owns every flat
        position whose k-th coordinate is i (a block when k is the outer axis, strided otherwise)."""
        if part is None or whole is None:
            return
        positions = np.moveaxis(np.arange(int(np.prod(sizes))).reshape(sizes), k, 0).reshape(sizes[k], -1)
        self.space.link(part, np.repeat(np.arange(sizes[k]), positions.shape[1]), whole, positions.ravel())
        if role:
            out, src = (whole, part) if whole_is_output else (part, whole)
            self.source(out, src, role)

    def source(self, out, src, role):
        if out is None:
            return
        self.record.sources.setdefault(out, []).append((src, role))
        self.record.order.setdefault(out, len(self.record.order))

    def never_zero(self, out):
        """The output along `out` is not zero even when every input is (sigmoid(0) = 0.5)."""
        self.source(out, SENTINEL, ADD)

    def zeros(self, d):
        """Every index of `d` is an exact zero, whatever the weights (the padding of a zero-fill Pad)."""
        self.record.zeros.add(d)

    def contract(self, *dims):
        """The node sums over these coupled indices: removing them is exact only if one operand is zero there."""
        dims = [d for d in dims if d is not None]
        if dims:
            self.record.contracts.append((self.label, dims, self.node))

    def divides_by(self, d):
        if d is not None:
            self.record.divisors.append((self.label, d))

    def consumer(self, tensor, axis):
        self._role(tensor, axis, "consumer")

    def follower(self, tensor, axis):
        self._role(tensor, axis, "follower")

    def _role(self, tensor, axis, role):
        d = self.d(tensor, axis)
        if d is not None and self.is_param(tensor):
            self.record.roles[d] = role

    def pin(self, tensor, axis, reason):
        d = self.d(tensor, axis)
        if d is not None:
            self.space.pin(d, reason)

    def pin_all(self, reason):
        for tensor in node_reads(self.node) + list(self.node.output):  # a subgraph's outer reads too
            if tensor:
                for d in self.dims(tensor):
                    if d is not None:
                        self.space.pin(d, reason)

    def broadcast(self, role, inputs=None):
        """Numpy broadcasting: couple each input axis to the output axis it lines up with."""
        out = self.output()
        out_rank = self.rank(out)
        if out_rank is None:
            return self.pin_all(f"{self.label}: output shape unknown")
        for i in (range(len(self.node.input)) if inputs is None else inputs):
            tensor = self.input(i)
            if tensor is None:
                continue
            rank = self.rank(tensor)
            if rank is None:
                return self.pin_all(f"{self.label}: input shape unknown")
            for axis in range(out_rank):
                in_axis = axis - (out_rank - rank)
                o = self.d(out, axis)
                a = self.d(tensor, in_axis) if in_axis >= 0 else None
                if a is not None and o is not None and self.space.sizes[a] == self.space.sizes[o]:
                    self.same(a, o, role)
                elif o is not None and role == ADD:
                    self.source(o, SENTINEL, ADD)  # a broadcast operand is the same for every channel
