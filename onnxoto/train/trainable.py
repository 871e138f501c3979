"""Which initializers are trainable, and the graph fixes the gradient builder needs."""
import copy

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ModelError
from ..graph import default_opset, fresh_name, infer_shapes, producers, taken_names
from ..ops import ALL, FLOAT_TYPES, attribute, no_gradient_inputs
from .kinds import BATCHNORM_MODES


def _differentiable_inputs(node: onnx.NodeProto) -> list[str]:
    excluded = no_gradient_inputs(node)
    if excluded == ALL:
        return []
    inputs = [name for i, name in enumerate(node.input) if name and i not in excluded]
    # Names a subgraph (If/Loop/Scan body) reads from the outer scope count as its inputs.
    for attr in node.attribute:
        for graph in [attr.g, *attr.graphs]:
            inputs += [name for sub in graph.node for name in sub.input if name]
    return inputs


def trainable_params(model: onnx.ModelProto) -> list[str]:
    """Float initializers that reach a graph output through differentiable inputs, in initializer order."""
    graph = model.graph
    producer = producers(graph)
    live, stack, visited = set(), [o.name for o in graph.output], set()
    while stack:
        name = stack.pop()
        if name in live:
            continue
        live.add(name)
        node = producer.get(name)
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        stack.extend(_differentiable_inputs(node))
    return [init.name for init in graph.initializer if init.data_type in FLOAT_TYPES and init.name in live]




def trained_params(model: onnx.ModelProto) -> list[str]:
    """What pruning trains: trainable_params without scalars, which are the graph's own constants (1/255,
    GELU's 0.5, an attention mask's fill value)."""
    sizes = {init.name: int(np.prod(init.dims)) for init in model.graph.initializer}
    return [name for name in trainable_params(model) if sizes[name] > 1]


def prepare_for_training(model: onnx.ModelProto, batchnorm: str = "frozen") -> onnx.ModelProto:
    """A copy of `model` that onnxruntime's gradient builder accepts (the input is not modified).

    LayerNormalization gets its optional Mean and InvStdDev outputs (the builder indexes them).
    BatchNormalization loses its running-statistics outputs and the training_mode attribute; with
    batchnorm="frozen" it becomes the affine op of inference mode (see BATCHNORM_MODES). In eval
    mode onnxruntime normalizes by the running statistics either way.
    """
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, not {batchnorm!r}")
    model = copy.deepcopy(model)
    taken = taken_names(model.graph)
    ranks = _ranks(model)
    if batchnorm == "frozen" and any(n.op_type == "BatchNormalization" and n.input[0] not in ranks
                                     for n in model.graph.node):
        infer_shapes(model)  # a model read with plain onnx.load carries no value_info
        ranks = _ranks(model)
    nodes = []
    for node in model.graph.node:
        if node.op_type == "LayerNormalization":
            _add_layernorm_outputs(node, taken)
        elif node.op_type == "BatchNormalization":
            _to_inference_batchnorm(node, model.graph)
            if batchnorm == "batch":
                nodes.append(node)
                continue
            if node.input[0] not in ranks:  # left as is, it would train on batch statistics
                raise ModelError(f"BatchNormalization '{node.name}': the rank of its input is unknown")
            nodes += _batchnorm_as_affine(node, ranks[node.input[0]], model.graph, taken)
            continue
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return _at_least_opset(model, GRADIENT_OPSET)


def _ranks(model):
    return {v.name: len(v.type.tensor_type.shape.dim) for v in [*model.graph.value_info, *model.graph.input]
            if v.type.tensor_type.HasField("shape")}


# The gradient builder emits its ops at the model's opset; some need 12+ (Clip's gradient has a
# LessOrEqual). Training graphs of older models are converted up; the model onnxoto writes keeps its opset.
GRADIENT_OPSET = 13


def _at_least_opset(model, opset):
    if default_opset(model) >= opset:
        return model
    try:
        return onnx.version_converter.convert_version(model, opset)
    except Exception:  # the builder then reports what it cannot do at the old opset
        return model


def _batchnorm_as_affine(node: onnx.NodeProto, rank: int, graph: onnx.GraphProto, taken: set[str]) -> list:
    """Y = X * s + t with s = scale / sqrt(var + eps), t = bias - mean * s, broadcast over axis 1."""
    x, scale, bias, mean, var = node.input[:5]
    base = node.name or node.output[0]
    fresh = {}
    for part in ("eps", "axes", "std", "s", "ms", "t", "s_b", "t_b", "xs"):
        fresh[part] = fresh_name(f"{base}_affine_{part}", taken)
    epsilon = attribute(node, "epsilon")
    graph.initializer.append(numpy_helper.from_array(np.array(1e-5 if epsilon is None else epsilon, np.float32), fresh["eps"]))
    if rank > 2:  # (C,) -> (C, 1, ...) by Reshape, which reads the same in every opset (Unsqueeze does not)
        graph.initializer.append(numpy_helper.from_array(np.array([-1] + [1] * (rank - 2), np.int64), fresh["axes"]))
    make = onnx.helper.make_node
    return [make("Add", [var, fresh["eps"]], [fresh["std"] + "_var"]),
            make("Sqrt", [fresh["std"] + "_var"], [fresh["std"]]),
            make("Div", [scale, fresh["std"]], [fresh["s"]]),
            make("Mul", [mean, fresh["s"]], [fresh["ms"]]),
            make("Sub", [bias, fresh["ms"]], [fresh["t"]]),
            *([make("Reshape", [fresh["s"], fresh["axes"]], [fresh["s_b"]]),
               make("Reshape", [fresh["t"], fresh["axes"]], [fresh["t_b"]])] if rank > 2 else
              [make("Identity", [fresh["s"]], [fresh["s_b"]]), make("Identity", [fresh["t"]], [fresh["t_b"]])]),
            make("Mul", [x, fresh["s_b"]], [fresh["xs"]]),
            make("Add", [fresh["xs"], fresh["t_b"]], [node.output[0]], name=node.name)]


def _add_layernorm_outputs(node: onnx.NodeProto, taken: set[str]) -> None:
    outputs = list(node.output) + [""] * (3 - len(node.output))
    for i, suffix in ((1, "mean"), (2, "inv_std_dev")):
        if not outputs[i]:
            outputs[i] = fresh_name(f"{outputs[0]}_{suffix}", taken)
    del node.output[:]
    node.output.extend(outputs)


def _to_inference_batchnorm(node: onnx.NodeProto, graph: onnx.GraphProto) -> None:
    extra = [name for name in node.output[1:] if name]
    read = {name for other in graph.node for name in other.input} | {o.name for o in graph.output}
    if any(name in read for name in extra):
        raise ModelError(f"BatchNormalization {node.name or node.output[0]!r}: its running statistics "
                         "outputs are used by the graph; only inference-mode BatchNormalization can be trained")
    del node.output[1:]
    kept = [a for a in node.attribute if a.name != "training_mode"]
    del node.attribute[:]
    node.attribute.extend(kept)

