"""Build the smaller model: slice initializers, rewrite shape constants, re-check."""
import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelError
from ..graph import check_model, drop_unused_initializers, infer_shapes, node_reads, producers, with_initializers
from ..groups import reduced_shapes, removed_positions
from ..ops import spec_of
from .erase import remove_units
from .fold import fold_constants


class ConstantEditor:
    """Reads and rewrites the constant vectors a node takes (shapes, sizes, bounds), one copy per node."""

    def __init__(self, graph, removed, shapes):
        self.graph, self.removed, self.shapes = graph, removed, shapes
        self.inits = {t.name: t for t in graph.initializer}
        self.producers = producers(graph)

    def set_attr(self, node, name, value):
        for a in node.attribute:
            if a.name == name:
                node.attribute.remove(a)
                break
        node.attribute.append(helper.make_attribute(name, value))

    def remove_attr(self, node, name):
        for a in node.attribute:
            if a.name == name:
                node.attribute.remove(a)
                return

    def set_sizes_input(self, node, i, values):
        while len(node.input) <= i:
            node.input.append("")
        name = f"{node.name or node.output[0]}_sizes"
        node.input[i] = self._add(name, values, numpy_helper.from_array(np.zeros(len(values), np.int64)))

    def vector(self, node, i):
        if i >= len(node.input) or not node.input[i]:
            return None
        init = self.inits.get(node.input[i])
        if init is None:
            return None
        return [int(v) for v in numpy_helper.to_array(init).ravel()]

    def rewrite_vector(self, node, i, fix):
        """Replace input i (an initializer, or a Concat of initializers and run-time pieces) by fix(values)."""
        name = node.input[i]
        if name in self.inits:
            values = fix(self.vector(node, i))
            node.input[i] = self._add(f"{name}_cut_{node.name or node.output[0]}", values, self.inits[name])
            return
        concat = self.producers.get(name)
        if concat is None or concat.op_type != "Concat":
            raise ModelError(f"{node.op_type} '{node.name}': its shape input '{name}' is computed at run time")
        pieces = []  # (input position, constant values or None, width)
        for k, piece in enumerate(concat.input):
            if piece in self.inits:
                values = [int(v) for v in numpy_helper.to_array(self.inits[piece]).ravel()]
                pieces.append((k, values, len(values)))
            else:
                shape = self.shapes.get(piece)
                if not shape or not isinstance(shape[0], int):
                    raise ModelError(f"{node.op_type} '{node.name}': cannot rewrite its run-time shape")
                pieces.append((k, None, shape[0]))
        fixed = fix([v for _, values, width in pieces for v in (values or [0] * width)])
        copy = onnx.NodeProto()
        copy.CopyFrom(concat)
        start = 0
        for k, values, width in pieces:
            new = [int(v) for v in fixed[start:start + width]]
            if values is not None and new != values:
                piece = concat.input[k]
                copy.input[k] = self._add(f"{piece}_cut_{node.name or node.output[0]}", new, self.inits[piece])
            start += width
        self._insert_own_copy(copy, concat, node, i)

    def _insert_own_copy(self, copy, concat, node, i):
        """The Concat may be shared by several readers: `node` alone gets the rewritten copy."""
        suffix = f"_cut_{node.name or node.output[0]}"
        copy.name = concat.name + suffix
        copy.output[0] = concat.output[0] + suffix
        self.graph.node.insert(list(self.graph.node).index(concat) + 1, copy)
        node.input[i] = copy.output[0]

    def _add(self, name, values, like):
        array = np.array(values, dtype=numpy_helper.to_array(like).dtype).reshape(tuple(like.dims))
        while name in self.inits:
            name += "_"
        tensor = numpy_helper.from_array(array, name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name


def cut(model, groups, keep, erased=()):
    """The pruned ModelProto: ZIGs where keep[group id] is False are removed everywhere, and the
    erased units (groups.ErasableUnit) with them."""
    removed = _merge(removed_positions(groups, keep), *(u.removed for u in erased))
    new_shapes = reduced_shapes(model.shapes, removed)
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    graph = proto.graph
    remove_units(graph, erased)
    drop_dead_nodes(graph)  # what only the erased branches read (their shape arithmetic) goes first
    _check_nothing_empty(graph, removed, new_shapes)
    fold_constants(graph, model, groups, keep, removed)  # reads the weights before they are sliced
    _slice_initializers(graph, removed)
    edit = ConstantEditor(graph, removed, model.shapes)
    for node in list(graph.node):
        spec = spec_of(node)
        if spec is not None and spec.rewrite is not None:
            spec.rewrite(node, new_shapes, model.shapes, edit)
    drop_dead_nodes(graph)
    drop_unused_initializers(graph)
    _update_value_info(graph, new_shapes, {tensor for tensor, _ in removed})
    _update_io(graph, new_shapes, removed)
    proto = infer_shapes(proto, model.name)
    try:
        check_model(proto)
    except Exception as exc:
        raise ModelError(f"cut model fails the ONNX checker: {str(exc).splitlines()[0]}") from None
    return proto


def _merge(*removals):
    merged = {}
    for removal in removals:
        for key, positions in removal.items():
            merged.setdefault(key, []).append(np.asarray(positions, np.int64).ravel())
    return {key: np.unique(np.concatenate(parts)) for key, parts in merged.items()}


def _check_nothing_empty(graph, removed, new_shapes):
    """A cut that would leave a live tensor without channels removes an operator: erasing's job."""
    live = {i for n in graph.node for i in node_reads(n)} | {o for n in graph.node for o in n.output}
    for tensor, axis in removed:
        shape = new_shapes.get(tensor)
        if tensor in live and shape is not None and shape[axis] == 0:
            raise ModelError(f"cannot remove every channel of '{tensor}' (axis {axis}): "
                             "erasing whole operators is separate")


def _slice_initializers(graph, removed):
    by_tensor = {}
    for (tensor, axis), positions in removed.items():
        by_tensor.setdefault(tensor, []).append((axis, positions))
    for k, init in enumerate(graph.initializer):
        if init.name not in by_tensor:
            continue
        array = numpy_helper.to_array(init)
        for axis, positions in by_tensor[init.name]:
            array = np.delete(array, positions, axis=axis)
        graph.initializer[k].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), init.name))


def _update_value_info(graph, new_shapes, changed):
    """Keep the exporter's shape annotations, with the cut sizes where they changed."""
    produced = {o for n in graph.node for o in n.output}
    kept = []
    for info in graph.value_info:
        if info.name not in produced:
            continue
        if info.name in changed:
            for dim, size in zip(info.type.tensor_type.shape.dim, new_shapes[info.name]):
                if isinstance(size, int):
                    dim.dim_value = size
        kept.append(info)
    del graph.value_info[:]
    graph.value_info.extend(kept)


def _update_io(graph, new_shapes, removed):
    """A group that changes graph inputs/outputs (groups.analyze(allow_io_change=True): a KV cache)
    cuts their declared sizes too."""
    axes = {}
    for tensor, axis in removed:
        axes.setdefault(tensor, []).append(axis)
    for value in [*graph.input, *graph.output]:
        for axis in axes.get(value.name, ()):
            value.type.tensor_type.shape.dim[axis].dim_value = new_shapes[value.name][axis]


def drop_dead_nodes(graph):
    """Nodes whose outputs nobody reads (shape Concats replaced by per-reader copies)."""
    while True:
        used = {i for n in graph.node for i in node_reads(n)} | {o.name for o in graph.output}
        alive = [n for n in graph.node if any(o in used for o in n.output)]
        if len(alive) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(alive)


def zero_out(model, groups, keep):
    """The trained-then-zeroed model M0: producer slices of removed ZIGs set to 0, nothing cut."""
    zeroed = {}
    for g in groups:
        mask = keep.get(g.id)
        if mask is None or mask.all():
            continue
        for s in g.producers:
            zeroed.setdefault(s.name, []).append((s.axis, s.index[~mask].ravel()))
    return _with_zeros(model.proto, zeroed)


def zero_units(proto, units):
    """M0 for erasure: every parameter of the units set to zero (and, for a Concat branch, what makes
    its channels zero downstream)."""
    zeroed = {p: [(0, slice(None))] for u in units for p in u.params}
    for u in units:
        for s in u.zero_slices:
            zeroed.setdefault(s.name, []).append((s.axis, s.index.ravel()))
    return _with_zeros(proto, zeroed)


def _with_zeros(proto, zeroed):
    """A copy of `proto` whose initializers are zero at zeroed[name]: [(axis, positions)]."""
    arrays = {}
    for init in proto.graph.initializer:
        if init.name in zeroed:
            array = numpy_helper.to_array(init).copy()
            for axis, positions in zeroed[init.name]:
                index = [slice(None)] * array.ndim
                index[axis] = positions
                array[tuple(index)] = 0
            arrays[init.name] = array
    return with_initializers(proto, arrays)
