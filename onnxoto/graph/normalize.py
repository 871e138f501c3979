"""Normalize a loaded model: inline functions, weights as initializers, no Identity/Dropout, constants folded, shapes known."""
import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx import numpy_helper, shape_inference

from ..errors import ModelError

PASS_THROUGH_OPS = {"Identity", "Dropout"}
ort.set_default_logger_severity(3)  # constant folding runs onnxruntime; its optimizer warnings are noise here


def normalize(model, name="model"):
    """Return a normalized copy of `model` (see module docstring)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    _drop_pass_through(model.graph)
    model = _fold_constants(model, name)
    _unshare_uniform_initializers(model.graph)
    return infer_shapes(model, name)


def infer_shapes(model, name="model"):
    """Run ONNX shape inference (with value propagation), raising ModelError when the model is invalid."""
    try:
        return shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{name}: shape inference failed ({first[:300]})") from None


def _drop_pass_through(graph):
    """Bypass Identity and inference-mode Dropout; an Identity that names a graph output stays."""
    outputs = {o.name for o in graph.output}
    rename, keep = {}, []
    for node in graph.node:
        if node.op_type in PASS_THROUGH_OPS and node.output[0] not in outputs and node.domain in ("", "ai.onnx"):
            if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
                keep.append(node)  # its mask is used
                continue
            source = node.input[0]
            rename[node.output[0]] = rename.get(source, source)
            continue
        keep.append(node)
    if not rename:
        return
    # Identity on an initializer is how TorchScript shares one tensor between layers:
    # give each reader its own copy, named after the Identity output, instead of tying them.
    inits = {t.name: t for t in graph.initializer}
    for alias, source in list(rename.items()):
        if source in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[source])
            copy.name = alias
            graph.initializer.append(copy)
            del rename[alias]
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(keep)


def _fold_constants(model, name):
    """Fold Constant nodes and constant subgraphs (shape arithmetic included) into initializers."""
    try:
        model = shape_inference.infer_shapes(model, data_prop=True)
        graph = gs.import_onnx(model)
        graph.toposort()
        graph.fold_constants(fold_shapes=True, error_ok=True).cleanup(remove_unused_graph_inputs=False).toposort()
        folded = gs.export_onnx(graph, do_type_check=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{name}: cannot fold constants ({first[:300]})") from None
    folded.ir_version = model.ir_version
    del folded.opset_import[:]
    folded.opset_import.extend(model.opset_import)
    _constant_nodes_to_initializers(folded.graph)
    return folded


def _constant_nodes_to_initializers(graph):
    """Turn what is left of Constant nodes (old paddle2onnx weights, for one) into initializers."""
    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1:
            value = onnx.helper.get_attribute_value(node.attribute[0])
            if isinstance(value, onnx.TensorProto):
                array = numpy_helper.to_array(value)
            elif isinstance(value, (int, float, list)):
                array = np.array(value, dtype=np.float32 if "float" in node.attribute[0].name else np.int64)
            else:
                keep.append(node)
                continue
            graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
            continue
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _unshare_uniform_initializers(graph):
    """A uniform tensor (all zeros, all ones) read by several nodes is the exporter's economy, not tied weights."""
    readers = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, i))
    for init in list(graph.initializer):
        users = readers.get(init.name, [])
        if len(users) < 2 or init.data_type not in FLOAT_TYPES:
            continue
        array = numpy_helper.to_array(init)
        if array.size < 2 or not np.all(array == array.flat[0]):
            continue
        for k, (node, i) in enumerate(users[1:], start=1):
            copy = numpy_helper.from_array(array, f"{init.name}__{k}")
            graph.initializer.append(copy)
            node.input[i] = copy.name


FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
