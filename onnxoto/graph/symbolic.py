"""Reshape targets computed at run time from a tensor's own sizes (`Shape -> Gather -> Unsqueeze ->
Concat`, how exporters write `x.view(n, g, c // g, h, w)` with a dynamic batch). ONNX shape inference
gives up on them when a size is symbolic; here such a target is evaluated as a list of sizes that are
ints or symbols, and the Reshape output gets its shape, so the channels stay known downstream."""
from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper


def resolve_runtime_reshapes(model_proto):
    """Give every Reshape output whose shape inference left unknown the shape its target evaluates to.
    Returns True if any was resolved (then shape inference should run again)."""
    graph = model_proto.graph
    shapes = _shapes(graph)
    producers = {o: n for n in graph.node for o in n.output}
    inits = _IntegerConstants(graph.initializer)
    resolved = False
    for node in graph.node:
        if node.op_type != "Reshape" or shapes.get(node.output[0]) is not None or node.input[0] not in shapes:
            continue
        target = _sizes(node.input[1], producers, inits, shapes)
        source = shapes[node.input[0]]
        if target is None or source is None or None in source:
            continue
        out = _reshaped(source, target)
        if out is None:
            continue
        info = helper.make_tensor_value_info(node.output[0], _elem_type(graph, node.input[0]), list(out))
        graph.value_info.append(info)
        shapes[node.output[0]] = out
        resolved = True
    return resolved


def _shapes(graph):
    shapes = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape") and value.name not in shapes:
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param or None
                                       for d in tensor.shape.dim)
    for t in graph.initializer:
        shapes[t.name] = tuple(t.dims)
    return shapes


def _elem_type(graph, name):
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.name == name:
            return value.type.tensor_type.elem_type
    return 1


def _sizes(name, producers, inits, shapes, depth=0):
    """The 1-D int64 value of `name` as a list of ints and symbols, or None if it is not shape arithmetic."""
    if name in inits:
        return [int(v) for v in np.ravel(inits[name])]
    node = producers.get(name)
    if node is None or depth > 8:
        return None
    if node.op_type == "Shape":
        shape = shapes.get(node.input[0])
        if shape is None or None in shape:
            return None
        start = _attr(node, "start", 0)
        end = _attr(node, "end", len(shape))
        return list(shape[start:end])
    parts = [_sizes(i, producers, inits, shapes, depth + 1) for i in node.input] if node.input else []
    if node.op_type == "Concat":
        return None if None in parts else [v for part in parts for v in part]
    if node.op_type in ("Unsqueeze", "Squeeze", "Cast", "Identity"):
        return parts[0] if parts and parts[0] is not None and len(parts[0]) == 1 else None
    if node.op_type == "Gather" and parts and parts[0] is not None and node.input[1] in inits:
        index = np.ravel(inits[node.input[1]])
        return [parts[0][int(k)] for k in index] if all(-len(parts[0]) <= k < len(parts[0]) for k in index) else None
    return None


def _attr(node, name, default):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _reshaped(source, target):
    """Reshape's output shape (0 copies the input's size, -1 is what remains), or None if not determined."""
    out = [source[k] if v == 0 and k < len(source) else v for k, v in enumerate(target)]
    if out.count(-1) > 1:
        return None
    if -1 in out:
        rest = _divide(source, [d for d in out if d != -1])
        if rest is None:
            return None
        out[out.index(-1)] = rest
    return tuple(out)


def _divide(numerator, denominator):
    """prod(numerator) / prod(denominator) over ints and symbols, if it is an int or a single symbol."""
    symbols = Counter(d for d in numerator if isinstance(d, str))
    symbols.subtract(Counter(d for d in denominator if isinstance(d, str)))
    if any(count < 0 for count in symbols.values()):
        return None
    left = [s for s, count in symbols.items() for _ in range(count)]
    top = int(np.prod([d for d in numerator if isinstance(d, int)]))
    bottom = int(np.prod([d for d in denominator if isinstance(d, int)]))
    if bottom == 0 or top % bottom:
        return None
    if not left:
        return top // bottom
    return left[0] if len(left) == 1 and top == bottom else None


def unify_symbols(model_proto, skeleton):
    """Where ONNX inference left sizes it could not name (`unk__*`: a broadcast of two symbols, an
    Expand to a run-time target), onnxruntime's symbolic inference, which merges equal symbols, names
    them. Decoders need it: the rotary cos/sin are sized by a position count that ONNX inference does
    not equate with the sequence length, so every tensor after them, and the repeat-KV Expand, lose
    their sizes, and the Reshapes of heads cannot be matched. Shapes are only refined: a static size
    is never changed; what the tool cannot infer stays as it was. Returns True if any shape changed."""
    shapes = _shapes(model_proto.graph)
    if not any(isinstance(d, str) and d.startswith("unk__") for shape in shapes.values() if shape for d in shape):
        return False
    inferred, complete = _symbolic_inference(skeleton)
    if not complete:  # an op the tool does not follow: keep ONNX's shapes (a partial result may merge wrongly)
        return False
    found = _shapes(inferred.graph)
    changed = False
    for value in [*model_proto.graph.value_info, *model_proto.graph.output]:
        old, new = shapes.get(value.name), found.get(value.name)
        if old is None or new is None or new == old or len(new) != len(old) or None in new:
            continue
        if any(isinstance(o, int) and n != o for o, n in zip(old, new)):
            continue
        for dim, size in zip(value.type.tensor_type.shape.dim, new):
            if isinstance(size, int):
                dim.Clear()
                dim.dim_value = size
            elif not dim.HasField("dim_value"):
                dim.dim_param = size
        changed = True
    return changed


class _IntegerConstants(dict):
    """The integer initializers (shape arithmetic reads only those), as arrays on first use: a model's
    weights are not copied."""

    def __init__(self, initializers):
        super().__init__((t.name, t) for t in initializers if t.data_type in _INTEGER_TYPES)

    def __getitem__(self, name):
        value = super().__getitem__(name)
        if isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
            self[name] = value
        return value


_INTEGER_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
                  onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}


ROWS = "onnxoto_rows"


def output_row_axes(model_proto, skeleton, inputs):
    """{output: axis} for the outputs whose rows (those of `inputs`, on their axis 0) lie on another axis than
    0 (a recurrent model's time-major (T, N, C)), found by onnxruntime's symbolic inference with the rows
    named: a model whose batch is fixed to 1 gives no other sign of where they go. {} when it cannot tell."""
    for value in skeleton.graph.input:
        if value.name in inputs and value.type.tensor_type.shape.dim:
            dim = value.type.tensor_type.shape.dim[0]
            dim.Clear()
            dim.dim_param = ROWS
    for value in skeleton.graph.output:
        value.type.tensor_type.ClearField("shape")
    del skeleton.graph.value_info[:]
    inferred, _ = _symbolic_inference(skeleton)  # as far as it gets: the rows are followed or not
    axes = {}
    for name, shape in _shapes(inferred.graph).items() if inferred is not None else ():
        if name in {o.name for o in model_proto.graph.output} and shape and ROWS in shape and shape.index(ROWS) != 0:
            axes[name] = shape.index(ROWS)
    return axes


def _symbolic_inference(skeleton):
    """(onnxruntime's symbolic shape inference of `skeleton` as far as it gets, whether it got through), or
    (None, False) if it fails. Its `infer_shapes` writes `sym_shape_infer_temp.onnx` into the working
    directory when it does not get through (and then raises): the steps it takes are run here instead."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference, get_opset
        if (get_opset(skeleton) or 0) < 7:
            return None, False
        inference = SymbolicShapeInference(2**31 - 1, True, False, 0)  # int_max, auto_merge, guess_output_rank, verbose
        inference._preprocess(skeleton)
        complete = False
        while inference.run_:
            complete = inference._infer_impl()
        inference._update_output_from_vi()
        return inference.out_mp_, bool(complete)
    except Exception:  # an op it cannot follow, a version it does not know
        return None, False
