"""The graph plumbing every stage shares, written once: who produces and who reads a tensor, a node's
display name, fresh names, shapes with one convention, a proto with other initializers or more outputs,
and the one place that opens an onnxruntime session."""
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .operands import node_reads


def producers(graph):
    """tensor name -> the node that writes it."""
    return {out: node for node in graph.node for out in node.output if out}


def readers(graph):
    """tensor name -> the nodes that read it (subgraph reads included), in graph order."""
    found = {}
    for node in graph.node:
        for name in node_reads(node):
            found.setdefault(name, []).append(node)
    return found


def display_name(node):
    """How messages and reports name a node: its name, or its first output for an unnamed one."""
    return node.name or node.output[0]


def taken_names(graph):
    """Every value name the graph uses (inputs, outputs, initializers, node inputs and outputs)."""
    names = {name for node in graph.node for name in [*node.input, *node.output]}
    return names | {v.name for v in [*graph.input, *graph.output, *graph.initializer]}


def fresh_name(name, taken):
    """`name`, or `name_1`, `name_2`... the first one not in `taken` (which then holds it)."""
    candidate, k = name, 0
    while candidate in taken:
        k += 1
        candidate = f"{name}_{k}"
    taken.add(candidate)
    return candidate


def dims(value_info):
    """The shape of a value as a tuple: int for a static dim, str for a symbolic one, None for an
    unnamed unknown one; None when the value carries no shape at all."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
                 for d in tensor.shape.dim)


def static_dims(value_info):
    """dims() with every symbolic or unknown dim as None, for code that only asks "static or not"."""
    shape = dims(value_info)
    return None if shape is None else tuple(d if isinstance(d, int) else None for d in shape)


def fed_whole(shape):
    """Whether a model input of declared `shape` (dims()) is fed whole to every run, the same array each
    time (a constant input: a sample rate, a recurrent state laid out `2 x batch x 128`), rather than cut
    into rows on axis 0: it is a scalar, or its first axis is a static size other than 1. An unknown
    shape, a symbolic first axis or a first axis fixed to 1 (a batch fixed in the file) take rows."""
    return shape is not None and (len(shape) == 0 or (isinstance(shape[0], int) and shape[0] != 1))


def whole_inputs(proto):
    """Names of the graph inputs of `proto` (initializers excluded) that are fed whole (fed_whole)."""
    initializers = {init.name for init in proto.graph.initializer}
    return frozenset(v.name for v in proto.graph.input if v.name not in initializers and fed_whole(dims(v)))


def batch_symbols(proto):
    """The symbols on axis 0 of the graph inputs that take rows (the batch, as a state `2 x batch x 128` names it)."""
    initializers = {init.name for init in proto.graph.initializer}
    shapes = [dims(v) for v in proto.graph.input if v.name not in initializers]
    return {s[0] for s in shapes if s and not fed_whole(s) and isinstance(s[0], str)}


def rowless_outputs(proto):
    """Names of the graph outputs without rows on axis 0: fed_whole shapes, and those that carry the batch
    symbol on a later axis only (Silero's next state, `dim x batch x dim`)."""
    batch = batch_symbols(proto)
    out = set()
    for value in proto.graph.output:
        shape = dims(value)
        if shape is not None and (fed_whole(shape) or (shape[0] not in batch and any(d in batch for d in shape[1:]))):
            out.add(value.name)
    return frozenset(out)


def take_rows(feeds, rows, whole=frozenset()):
    """feeds with every array but those named in `whole` cut to `rows` (a slice or an index array)."""
    return {name: array if name in whole else array[rows] for name, array in feeds.items()}


def row_count(feeds, whole=frozenset()):
    """The number of rows of feeds: the length of the first array not fed whole (1 when all are)."""
    return next((len(array) for name, array in feeds.items() if name not in whole), 1)


def with_initializers(proto, arrays):
    """A copy of `proto` whose initializers named in `arrays` hold those values (cast to the
    initializer's dtype and shape)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for k, init in enumerate(out.graph.initializer):
        if init.name in arrays:
            array = arrays[init.name].astype(helper.tensor_dtype_to_np_dtype(init.data_type)).reshape(tuple(init.dims))
            out.graph.initializer[k].CopyFrom(numpy_helper.from_array(array, init.name))
    return out


def with_outputs(proto, names, copy=True):
    """A copy of `proto` that also outputs `names` (typed, without shapes: a cut model's may differ);
    copy=False: `proto` itself, changed (one made for this run: a copy of a large model costs seconds)."""
    out = proto
    if copy:
        out = onnx.ModelProto()
        out.CopyFrom(proto)
    have = {o.name for o in out.graph.output}
    known = {v.name: v.type.tensor_type.elem_type for v in [*out.graph.value_info, *out.graph.input]}
    for name in dict.fromkeys(names):
        if name not in have:
            out.graph.output.append(helper.make_tensor_value_info(name, known.get(name, onnx.TensorProto.FLOAT), None))
    return out


def session(proto_or_path, threads=None, provider="CPUExecutionProvider"):
    """An onnxruntime InferenceSession (on the CPU by default), quiet, of a ModelProto or a file.
    A proto too large to serialize whole goes as its skeleton, its large initializers handed over
    as arrays (kept alive with the session)."""
    import onnxruntime as ort

    from .store import detached, is_large

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if isinstance(proto_or_path, (str, os.PathLike)):
        return ort.InferenceSession(os.fspath(proto_or_path), options, providers=[provider])
    arrays = values = None
    if is_large(proto_or_path):
        proto_or_path, arrays = detached(proto_or_path)
        values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a)) for a in arrays.values()]
        options.add_external_initializers(list(arrays), values)
        options.add_session_config_entry("session.disable_prepacking", "1")  # a packed copy of every weight
    made = ort.InferenceSession(proto_or_path.SerializeToString(), options, providers=[provider])
    made.onnxoto_initializers = arrays, values  # onnxruntime reads them in place: they must outlive the session
    return made


def run(proto, feeds):
    """Outputs of a ModelProto on the CPU, in graph output order."""
    return session(proto).run(None, feeds)
