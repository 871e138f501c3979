"""From a normalized model to its groups: apply the rules, solve the couplings, check zero-invariance."""
import numpy as np
from onnx import TensorProto

from ..ops import ADD, MUL, spec_of
from .constant import constant_dims, fold_or_reason, needed_constants, unfoldable_values
from .context import SENTINEL, NodeContext, Record
from .dims import DimSpace
from .group import CONSUMER, FOLLOWER, PRODUCER, DimSlice, Group, ParamSlice

SINGLE_CHANNEL = "a single channel: cutting it would remove the operator (see erasing)"


def couple(model, allow_io_change=False):
    """Run every node's rule; return the DimSpace and the Record of zero behaviour.

    allow_io_change: graph inputs and outputs are not pinned but recorded (Record.io_inputs and
    io_outputs); a group may then change the ones it reaches, if it reaches inputs and outputs both
    (a KV cache fed back as it came out; an output alone, logits, stays)."""
    space, record = DimSpace(), Record()
    for node in model.graph.node:
        ctx = NodeContext(node, model, space, record)
        spec = spec_of(node)
        unknown = _unknown_shape(model, node)
        if spec is None or spec.couple is None:
            domain = f"{node.domain}." if node.domain not in ("", "ai.onnx") else ""
            ctx.pin_all(f"no rule for {domain}{node.op_type}")
        elif _quantizes(model, node):  # the integer side (ConvInteger, MatMulInteger) has no rule to cut it
            ctx.pin_all(f"Cast '{node.name or node.output[0]}' quantizes these channels to integers "
                        "(quantized models are not pruned)")
        elif unknown:  # a rule needs the shapes it couples; zeros crossing this node are not followed
            ctx.pin_all(f"shape of '{unknown}' unknown at {node.op_type} '{node.name or node.output[0]}' "
                        "(computed at run time; --input-shape may resolve it)")
        else:
            spec.couple(ctx)
    for name in model.input_names:
        _pin_tensor(model, space, name, f"reaches graph input '{name}'", record.io_inputs if allow_io_change else None)
    for name in model.output_names:
        _pin_tensor(model, space, name, f"reaches graph output '{name}'", record.io_outputs if allow_io_change else None)
    return space, record


def _quantizes(model, node):
    """A Cast from float to an integer type: how quantized models turn biases and activations into integers."""
    if node.op_type != "Cast" or not model.is_float(node.input[0]):
        return False
    to = next((a.i for a in node.attribute if a.name == "to"), None)
    return to in _INTEGER_TYPES


_INTEGER_TYPES = {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32,
                  TensorProto.UINT32, TensorProto.INT64, TensorProto.UINT64}


def _unknown_shape(model, node):
    """The first float tensor the node reads or writes whose shape inference left unknown, else None."""
    for name in [*node.input, *node.output]:
        if name and model.is_float(name) and model.shapes.get(name) is None:
            return name
    return None


def _pin_tensor(model, space, name, reason, io=None):
    """Pin the tensor's channel axes, or (io given) record them there: dim -> reason."""
    for axis, size in enumerate(model.shapes.get(name) or ()):
        if isinstance(size, int) and size > 1 and model.is_float(name):
            d = space.dim(name, axis, size)
            if io is None:
                space.pin(d, reason)
            else:
                io[d] = reason


def build_groups(model, allow_io_change=False):
    """All groups that own parameter slices, prunable or not (with the reason)."""
    space, record = couple(model, allow_io_change)
    comps = space.solve()
    members = comps.members()
    groups = []
    producer = {out: (k, node) for k, node in enumerate(model.graph.node) for out in node.output if out}
    for signature, zigs, index_of_class in _components_by_signature(comps, members):
        dims = [DimSlice(*space.keys[d], index_of_class[c]) for c in signature for d in members[c]]
        params = [d for c in signature for d in members[c] if model.is_param(space.keys[d][0])]
        if not params:
            continue
        slices = [ParamSlice(*space.keys[d], index_of_class[comps.class_of(d)], record.roles.get(d, PRODUCER))
                  for d in params]
        group = Group(id="", num_zigs=len(zigs), dims=dims, slices=slices)
        group.reason = _why_not_prunable(comps, record, set(signature), members, slices, model, space, group, producer)
        group.prunable = not group.reason
        if group.reason and group.reason != SINGLE_CHANNEL:
            group.folds, group.constants = [], []
        if group.prunable:
            group.io = sorted({space.keys[d][0] for c in signature for d in members[c]
                               if d in record.io_inputs or d in record.io_outputs})
        groups.append(group)
    _name_groups(groups)
    return groups


def _components_by_signature(comps, members):
    """Yield (classes, component labels, class -> (num_zigs, k) index array) per group of alike ZIGs."""
    space = comps.space
    pairs = []
    for c in members:
        labels = comps.class_labels(c)
        pairs.append(np.stack([labels, np.full(len(labels), c), np.arange(len(labels))], axis=1))
    if not pairs:
        return
    table = np.concatenate(pairs)
    table = table[np.lexsort((table[:, 2], table[:, 1], table[:, 0]))]  # by label, class, index
    label_class = np.unique(table[:, :2], axis=0)
    signatures = {}
    for label, start, stop in _runs(label_class[:, 0]):
        signatures.setdefault(tuple(label_class[start:stop, 1].tolist()), []).append(label)
    class_rows = _rows_by_class(table)
    for signature, labels in signatures.items():
        labels = np.array(labels)
        index_of_class = {}
        regular = True
        for c in signature:
            rows = class_rows[c]
            picked = rows[np.isin(rows[:, 0], labels)]
            counts = np.unique(picked[:, 0], return_counts=True)[1]
            if len(counts) != len(labels) or counts.min() != counts.max():
                regular = False  # ZIGs of unequal width: not representable as (num_zigs, k)
                break
            index_of_class[c] = picked[:, 2].reshape(len(labels), counts[0])
        if regular:
            yield signature, labels, index_of_class


def _rows_by_class(table):
    order = np.argsort(table[:, 1], kind="stable")
    sorted_table = table[order]
    out = {}
    for c, start, stop in _runs(sorted_table[:, 1]):
        out[int(c)] = sorted_table[start:stop]
    return out


def _runs(values):
    """(value, start, stop) for each run of equal values in a sorted 1-D array."""
    if len(values) == 0:
        return
    edges = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [len(values)]])
    for s, e in zip(starts, stops):
        yield int(values[s]), int(s), int(e)


def _why_not_prunable(comps, record, signature, members, slices, model, space, group, producer):
    """The first reason zeroing the producers would not make the channels removable exactly, or ''.
    Channels that are a constant where a consumer folds it into its bias (groups.constant) are
    removable: the folds go on the group (Group.folds, Group.constants)."""
    for c in sorted(signature):
        if c in comps.pinned_classes:
            return comps.pinned_classes[c]
    if not any(s.role == PRODUCER for s in slices):
        return "no parameter produces these channels"
    in_group = {d for c in signature for d in members[c]}
    reached_in = sorted(d for d in in_group if d in record.io_inputs)
    reached_out = sorted(d for d in in_group if d in record.io_outputs)
    if reached_out and not reached_in:
        return record.io_outputs[reached_out[0]]
    if reached_in and not reached_out:
        return record.io_inputs[reached_in[0]]
    # a graph input the group changes is fed zero where its channels go (the model's own cache)
    zero = {d: (model.is_param(space.keys[d][0]) and record.roles.get(d, PRODUCER) == PRODUCER)
            or d in record.io_inputs or d in record.zeros for d in in_group}
    for d in sorted((d for d in in_group if d in record.sources), key=record.order.get):
        if not zero[d]:
            zero[d] = _is_zero(record.sources[d], zero, in_group)
    for label, d in record.divisors:
        if d in in_group and zero[d]:
            return f"{label} divides by these channels, which become zero"
    constants = None
    for label, dims, node in record.contracts:
        inside = [d for d in dims if d in in_group]
        if inside and not any(zero[d] for d in inside):
            if constants is None:
                constants = constant_dims(model, producer, [space.keys[d] for d in in_group if zero[d]],
                                          [space.keys[d] for d in in_group if not zero[d]])
            fold, why = fold_or_reason(model, label, node, [space.keys[d] for d in inside], set(constants))
            if why:
                return why
            group.folds.append(fold)
    if group.folds:
        group.constants = needed_constants(constants, group.folds, producer)
        why = unfoldable_values(model, producer, group)
        if why:
            return why
    if len(next(iter(slices)).index) < 2:  # last: such a group is exact, erasing may remove it whole
        return SINGLE_CHANNEL
    return ""


def _is_zero(sources, zero, in_group):
    muls = [zero[s] for s, role in sources if role == MUL and s in in_group]
    adds = [s is not SENTINEL and zero[s] for s, role in sources if role == ADD and (s is SENTINEL or s in in_group)]
    if not muls and not adds:
        return False
    return (not muls or any(muls)) and all(adds)


def _name_groups(groups):
    """A group is named after its first producer slice: '<initializer>:<axis>' (stable across runs)."""
    taken = set()
    for g in groups:
        first = next((s for s in g.slices if s.role == PRODUCER), g.slices[0])
        name = f"{first.name}:{first.axis}"
        if name in taken:
            name = f"{name}@{int(first.index.min())}"
        taken.add(name)
        g.id = name
