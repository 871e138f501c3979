"""Normalize a loaded model: inline functions, weights as initializers, no Identity/Dropout, constants folded, shapes known."""
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.logger import G_LOGGER
import onnxruntime as ort
from onnx import numpy_helper, shape_inference

from ..errors import ModelError
from ..ops import FLOAT_TYPES, resolve_fresh_symbol, spec_of
from .operands import node_reads
from .store import is_large
from .symbolic import output_row_axes, resolve_runtime_reshapes, unify_symbols
from .view import dims, fresh_name, whole_inputs

ort.set_default_logger_severity(3)  # constant folding runs onnxruntime; its optimizer warnings are noise here


def normalize(model, name="model"):
    """Normalize `model` (see module docstring); it is changed in place and returned."""
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    _negative_dims_to_symbols(model.graph)
    _drop_pass_through(model.graph)
    model = _fold_constants(model, name)
    for _ in range(_IF_ROUNDS):  # an If on a size shape inference knows (Silero's): its branch, inlined
        if not (_fold_static_sizes(model, name) | _inline_constant_ifs(model.graph)):
            break
        _drop_pass_through(model.graph)
        model = _fold_constants(model, name)
    _unshare_uniform_initializers(model.graph)
    drop_unused_initializers(model.graph)
    return know_shapes(model, name)


def know_shapes(model, name="model"):
    """ONNX shape inference in place, then the sizes it leaves unknown: Reshape outputs it names with fresh
    symbols, Reshapes to run-time targets, symbols onnxruntime's symbolic inference equates. Returns `model`."""
    infer_shapes(model, name)
    if _name_reshape_outputs(model):
        infer_shapes(model, name)  # let the named sizes flow downstream
    for _ in range(_RUNTIME_RESHAPE_ROUNDS):  # each round may uncover the next run-time Reshape
        if not resolve_runtime_reshapes(model):
            break
        infer_shapes(model, name)
    unify_symbols(model, _skeleton(model))
    return model


_RUNTIME_RESHAPE_ROUNDS = 8
_IF_ROUNDS = 8


def row_axes(model):
    """{output: axis} of the outputs whose rows are not on axis 0 (symbolic.output_row_axes), of a model as
    read: normalizing folds a batch fixed to 1 into the shape arithmetic, and the rows can no longer be followed."""
    initializers, whole = {t.name for t in model.graph.initializer}, whole_inputs(model)
    rowed = {v.name for v in model.graph.input if v.name not in initializers and v.name not in whole}
    return output_row_axes(model, _skeleton(model), rowed)


def _fold_static_sizes(model, name):
    """Gather(Shape(t), k) of a dim of t that shape inference knows statically, and Size(Shape(t)) of a t
    of known rank, become constants (the folder only folds a Shape whose every dim is static). Returns
    whether any was folded."""
    if not any(n.op_type == "If" for n in model.graph.node):
        return False
    inferred = infer_shapes(_copy(model), name)
    shapes = {v.name: dims(v) for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}
    shape_of = {n.output[0]: n for n in model.graph.node if n.op_type == "Shape"}
    inits = {t.name: t for t in model.graph.initializer}
    changed, keep = False, []
    for node in model.graph.node:
        source = shape_of.get(node.input[0]) if node.op_type in ("Gather", "Size") and node.input else None
        known = shapes.get(source.input[0]) if source is not None and not source.attribute else None
        if node.op_type == "Size" and known is not None:  # the rank, known whatever the sizes
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(len(known), np.int64), node.output[0]))
            changed = True
            continue
        if node.op_type == "Gather" and source is not None and len(node.input) > 1 and node.input[1] in inits and not source.attribute:
            known = shapes.get(source.input[0])
            index = numpy_helper.to_array(inits[node.input[1]])
            if known is not None and all(isinstance(known[int(k)], int) for k in index.reshape(-1)):
                sizes = np.asarray([known[int(k)] for k in index.reshape(-1)], np.int64).reshape(index.shape)
                model.graph.initializer.append(numpy_helper.from_array(sizes, node.output[0]))
                changed = True
                continue
        keep.append(node)
    if changed:
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return changed


def _copy(model):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _inline_constant_ifs(graph):
    """Replace each If of the main graph whose condition is an initializer by the branch it takes: the
    branch's nodes and initializers, its local names made fresh, its outputs named as the If's."""
    inits = {t.name: t for t in graph.initializer}
    taken = {n for node in graph.node for n in [*node.input, *node.output]} | set(inits)
    taken |= {v.name for v in [*graph.input, *graph.output]}
    changed, nodes = False, []
    for node in graph.node:
        if node.op_type != "If" or node.input[0] not in inits:
            nodes.append(node)
            continue
        cond = bool(numpy_helper.to_array(inits[node.input[0]]).reshape(-1)[0])
        branch = next(a.g for a in node.attribute if a.name == ("then_branch" if cond else "else_branch"))
        nodes.extend(_branch_nodes(graph, node, branch, taken))
        changed = True
    if changed:
        del graph.node[:]
        graph.node.extend(nodes)
    return changed


def _branch_nodes(graph, node, branch, taken):
    """The nodes of `branch` (of If `node`) for the outer graph; its initializers are added to `graph`."""
    produced = {o for n in branch.node for o in n.output if o}
    rename = {}
    for k, out in enumerate(branch.output):
        if k < len(node.output) and out.name in produced and out.name not in rename:
            rename[out.name] = node.output[k]
    for local in [*produced, *(t.name for t in branch.initializer)]:
        if local not in rename:
            rename[local] = fresh_name(f"{node.name or node.output[0]}/{local}", taken)
    for init in branch.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = rename[init.name]
        graph.initializer.append(copy)
    out = []
    for inner in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        _rename_reads(copy, rename)
        for i, name in enumerate(copy.output):
            copy.output[i] = rename.get(name, name)
        out.append(copy)
    for k, value in enumerate(branch.output):  # an output the branch passes through from outside
        if k < len(node.output) and rename.get(value.name) != node.output[k]:
            out.append(onnx.helper.make_node("Identity", [rename.get(value.name, value.name)], [node.output[k]],
                                             name=fresh_name(f"{node.name}/out{k}", taken)))
    return out


def _rename_reads(node, rename):
    for i, name in enumerate(node.input):
        node.input[i] = rename.get(name, name)
    for attr in node.attribute:  # nested subgraphs read outer names too
        for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            for inner in sub.node:
                _rename_reads(inner, rename)


def _negative_dims_to_symbols(graph):
    """A declared size of -1 (old paddle2onnx writes them for the batch) is invalid ONNX that
    strict shape inference, the gradient builder's included, refuses: make it a named symbol."""
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for k, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value < 0:
                dim.Clear()
                dim.dim_param = f"{value.name}_dim{k}"


def _name_reshape_outputs(model):
    """Give Reshape outputs that inference left as fresh symbols (a -1, a run-time target) their size."""
    info = {v.name: v for v in model.graph.value_info}
    shapes = {v.name: dims(v) or () for v in list(model.graph.input) + list(model.graph.value_info)}
    changed = False
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.output[0] not in info or node.input[0] not in shapes:
            continue
        _, resolved = resolve_fresh_symbol(shapes[node.input[0]], shapes.get(node.output[0]))
        if resolved != shapes.get(node.output[0]):
            for dim, size in zip(info[node.output[0]].type.tensor_type.shape.dim, resolved):
                if isinstance(size, int) and not dim.HasField("dim_value"):
                    dim.dim_value = size
            changed = True
    return changed


def drop_unused_initializers(graph):
    """Initializers no node reads (left behind by bypassed Identity nodes or cut shape constants)."""
    used = {i for n in graph.node for i in node_reads(n)} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)


def infer_shapes(model, name="model"):
    """Run ONNX shape inference (with value propagation) in place; raise ModelError when the model is invalid.

    Inference runs on a skeleton whose large float initializers are declared inputs, so a
    multi-gigabyte model is not serialized for it.
    """
    try:
        inferred = shape_inference.infer_shapes(_skeleton(model), strict_mode=False, data_prop=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{name}: shape inference failed ({first[:300]})") from None
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    for declared, found in zip(model.graph.output, inferred.graph.output):  # outputs declared without a shape
        if not declared.type.tensor_type.HasField("shape") and found.type.tensor_type.HasField("shape"):
            declared.type.CopyFrom(found.type)
    return model


SKELETON_MIN_SIZE = 64  # float initializers with more elements than this travel as declared inputs


def _skeleton(model):
    skeleton = onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import,
                               functions=model.functions)
    graph = skeleton.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    produced = {o for n in model.graph.node for o in n.output}
    graph.value_info.extend(v for v in model.graph.value_info if v.name in produced)
    declared = {i.name for i in model.graph.input}
    for t in model.graph.initializer:
        if t.data_type in FLOAT_TYPES and np.prod(t.dims) > SKELETON_MIN_SIZE:
            if t.name not in declared:
                graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            graph.initializer.append(t)
    return skeleton


def _drop_pass_through(graph):
    """Bypass Identity and inference-mode Dropout; an Identity that names a graph output stays."""
    outputs = {o.name for o in graph.output}
    rename, keep = {}, []
    for node in graph.node:
        spec = spec_of(node)
        if spec is not None and spec.pass_through and node.output[0] not in outputs:
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
    if not _has_foldable_nodes(model.graph):
        _constant_nodes_to_initializers(model.graph)
        return model
    return _fold_around_weights(model, name) if is_large(model) else _folded_copy(model, name)


def _folded_copy(model, name):
    """The model with its constants folded, as a new proto."""
    try:
        inferred = infer_shapes(model, name)
        folded = _folded(inferred, flatten=True)
        if _undefined_inputs(folded.graph):
            # onnx-graphsurgeon 0.6 flattening an If whose branch ends in a nested multi-output If loses
            # outputs (silero VAD): then Ifs stay as they are
            folded = _folded(inferred, flatten=False)
    except ModelError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{name}: cannot fold constants ({first[:300]})") from None
    folded.ir_version = model.ir_version
    del folded.opset_import[:]
    folded.opset_import.extend(model.opset_import)
    _constant_nodes_to_initializers(folded.graph)
    return folded


def _fold_around_weights(model, name):
    """Fold a model too large to copy: its skeleton (the large weights as declared inputs) is folded, and
    its nodes and small initializers replace the model's own; the weights are never copied."""
    skeleton = _skeleton(model)
    weights = {i.name for i in skeleton.graph.input} - {i.name for i in model.graph.input}
    folded = _folded_copy(skeleton, name)
    graph = model.graph
    for k in reversed(range(len(graph.initializer))):
        if graph.initializer[k].name not in weights:
            del graph.initializer[k]
    graph.initializer.extend(folded.graph.initializer)
    for field in ("node", "value_info"):
        del getattr(graph, field)[:]
        getattr(graph, field).extend(getattr(folded.graph, field))
    return model


def _folded(model, flatten):
    G_LOGGER.severity = G_LOGGER.ERROR  # its warnings (large folded tensors, no `colored`) are not the user's
    graph = gs.import_onnx(model)
    graph.toposort()
    graph.fold_constants(fold_shapes=True, error_ok=True, flatten_subgraphs=flatten)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return gs.export_onnx(graph, do_type_check=False)


def _undefined_inputs(graph):
    """Node inputs (of the main graph) that no node, initializer or graph input defines."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    defined |= {o for n in graph.node for o in n.output}
    return [i for n in graph.node for i in n.input if i not in defined]


def _has_foldable_nodes(graph):
    """Whether some node computes from constants only, or reads a shape."""
    constant = {t.name for t in graph.initializer}
    for node in graph.node:
        reads_shape = spec_of(node) is not None and spec_of(node).shape_only
        if reads_shape or (node.input and all(i in constant or not i for i in node.input)):
            return True
        if node.op_type == "Constant":
            constant.update(node.output)
    return False


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
