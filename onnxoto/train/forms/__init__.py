"""Training forms: the training graph with every operator onnxruntime-training (CPU, 1.19.2)
cannot differentiate (or differentiates slowly) replaced by an exactly equivalent composition of
operators it can.

Only the training graph is rewritten; the exported model keeps its original operators.
Parameters keep their names, except those a ParamMap entry renames (ConvTranspose weights,
trained in Conv layout).
"""
import copy

import onnx

from .activations import hard_sigmoid, hard_swish, prelu, relu
from .context import Context, NotNeeded, Unsupported
from .conv_transpose import conv_transpose
from .indexing import pad, slice_
from .layout import depth_to_space, space_to_depth
from .param_map import ConvTransposeLayout, ParamMap
from .pooling import average_pool, global_max_pool, reduce_max
from .recurrent import recurrent
from .resize import resize
from .sums import lrn, mean, sum_

__all__ = ["REWRITES", "ConvTransposeLayout", "ParamMap", "to_trainable", "untrainable_operator"]

# op type -> rewrite(node, ctx): emits the replacement into ctx (its last node writes the
# node's output) or raises Unsupported, and the node stays. Why each op needs one is its
# ops spec's `no_gradient` (tests/test_ops.py holds the two to the same set of ops).
REWRITES = {
    "Relu": relu,
    "HardSigmoid": hard_sigmoid,
    "HardSwish": hard_swish,
    "PRelu": prelu,
    "GlobalMaxPool": global_max_pool,
    "ReduceMax": reduce_max,
    "DepthToSpace": depth_to_space,
    "SpaceToDepth": space_to_depth,
    "Resize": resize,
    "ConvTranspose": conv_transpose,
    "Slice": slice_,
    "Pad": pad,
    "AveragePool": average_pool,
    "Sum": sum_,
    "Mean": mean,
    "LRN": lrn,
    "LSTM": recurrent,
    "GRU": recurrent,
}


def to_trainable(model: onnx.ModelProto, rewrites: dict | None = None) -> tuple[onnx.ModelProto, ParamMap]:
    """A copy of `model` in training forms, and the map from its parameters to the model's."""
    rewrites = REWRITES if rewrites is None else rewrites
    model = copy.deepcopy(model)
    ctx = Context(model)
    ctx.param_map = param_map = ParamMap()
    nodes = []
    for node in model.graph.node:
        rewrite = rewrites.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if rewrite is None:
            nodes.append(node)
            continue
        ctx.nodes = []
        try:
            rewrite(node, ctx)
        except NotNeeded:
            nodes.append(node)
            continue
        except Unsupported as reason:
            param_map.kept.append((node.name or node.output[0], node.op_type, str(reason)))
            nodes.append(node)
            continue
        nodes.extend(ctx.nodes)
        param_map.rewritten[node.op_type] = param_map.rewritten.get(node.op_type, 0) + 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    kept = [init for init in model.graph.initializer if init.name not in ctx.dropped_initializers]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + ctx.new_initializers)
    # Shapes recorded for the replaced nodes' intermediates would be stale; outputs keep theirs.
    del model.graph.value_info[:]
    return model, param_map


# operators onnxruntime-training (1.19.2) cannot differentiate and no form replaces: node -> reason or None
NO_GRADIENT = {
    "Einsum": lambda node: "no gradient is registered for Einsum",
}


def untrainable_operator(model: onnx.ModelProto, param_map: ParamMap, params) -> str | None:
    """One line naming the first operator of the training graph (after to_trainable) that gradients from
    `params` must cross and onnxruntime-training cannot differentiate; None if there is none."""
    kept = {name: (op, reason) for name, op, reason in param_map.kept}
    reached = set(params)
    for node in model.graph.node:  # topological order
        if not any(name in reached for name in node.input):
            continue
        reached.update(node.output)
        label = node.name or node.output[0]
        if label in kept:
            op, reason = kept[label]
            return f"{op} '{label}' has no trainable form in onnxruntime-training ({reason})"
        check = NO_GRADIENT.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        reason = check(node) if check else None
        if reason:
            return f"{node.op_type} '{label}' cannot be trained in onnxruntime-training ({reason})"
    return None
