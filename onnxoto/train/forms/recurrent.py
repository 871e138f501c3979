"""LSTM and GRU in the form onnxruntime-training (1.19.2) differentiates. Its LSTMGrad and GRUGrad
take only the forward direction: reading a sequence backward (direction reverse or bidirectional)
is a forward pass over the time-reversed sequence, whose outputs are reversed back. And its gradient
builder misplaces inputs unless every optional one is listed (as ''): X, W, R, B without the rest
fails to build ("Type 'tensor(float)' of input parameter (y) of operator (LSTMGrad) is invalid")."""
import numpy as np
from onnx import helper

from ...ops import attribute
from .context import Context, NotNeeded, Unsupported

# inputs with num_directions as their first axis (X and sequence_lens are shared)
PER_DIRECTION = {"LSTM": (1, 2, 3, 5, 6, 7), "GRU": (1, 2, 3, 5)}
ARITY = {"LSTM": 8, "GRU": 6}
DEFAULT_ACTIVATIONS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"]}
SEQUENCE_LENS = 4


def recurrent(node, ctx: Context) -> None:
    reason = _kernel_limit(node)
    if reason:
        raise Unsupported(reason)
    direction = attribute(node, "direction", "forward")
    if direction == "forward":
        if len(node.input) >= ARITY[node.op_type] and attribute(node, "activations") is None:
            raise NotNeeded("the forward direction with every input listed trains as it is")
        ctx.nodes.append(_one_direction(node, list(node.input), list(node.output), 0, 1, ctx.fresh(node.name or "rnn")))
        return
    if attribute(node, "layout", 0) != 0:
        raise Unsupported("backward in time with layout=1 (batch first)")
    if len(node.input) > SEQUENCE_LENS and node.input[SEQUENCE_LENS]:
        raise Unsupported("backward in time with sequence_lens: each sequence reverses at its own length")
    base = node.name or node.output[0]
    x = node.input[0]
    reversed_time = _reversed_time(x, node, ctx, base)
    directions = ["forward", "reverse"] if direction == "bidirectional" else ["reverse"]
    outputs = []  # per direction: its (Y, Y_h[, Y_c]) names
    for k, which in enumerate(directions):
        inputs = _direction_inputs(node, ctx, k, len(directions), base)
        if which == "reverse":
            inputs[0] = ctx.emit("Gather", [x, reversed_time], base=f"{base}_reversed_x", axis=0)
        names = [ctx.fresh(f"{base}_{which}_{i}") if out else "" for i, out in enumerate(node.output)]
        ctx.nodes.append(_one_direction(node, inputs, names, k, len(directions), ctx.fresh(f"{base}_{which}")))
        if which == "reverse" and node.output[0]:
            names[0] = ctx.emit("Gather", [names[0], reversed_time], base=f"{base}_reversed_y", axis=0)
        outputs.append(names)
    for i, name in enumerate(node.output):
        if not name:
            continue
        parts = [o[i] for o in outputs]
        axis = 1 if i == 0 else 0  # Y: (T, directions, N, H); Y_h, Y_c: (directions, N, H)
        if len(parts) == 1:
            ctx.emit("Identity", parts, name, base=base)
        else:
            ctx.emit("Concat", parts, name, base=base, axis=axis)


def _kernel_limit(node) -> str | None:
    """What onnxruntime-training's kernel refuses in this node (it checks only when the session starts)."""
    op = node.op_type
    names = [a.decode() if isinstance(a, bytes) else a for a in attribute(node, "activations", [])]
    if names and [n.lower() for n in names] != DEFAULT_ACTIVATIONS[op] * (len(names) // len(DEFAULT_ACTIVATIONS[op])):
        return f"{op}Grad takes only the default activations ({', '.join(DEFAULT_ACTIVATIONS[op])}), not {', '.join(names)}"
    if attribute(node, "clip") is not None:
        return f"{op}Grad does not take clip"
    if attribute(node, "input_forget", 0):
        return f"{op}Grad does not take input_forget"
    return None


def _reversed_time(x, node, ctx, base):
    """Indices T-1, ..., 0 of axis 0 of `x`: constants when T is static, else a Range of its length."""
    shape = ctx.shape(x)
    if shape is not None and shape[0] is not None:
        return ctx.ints(np.arange(shape[0] - 1, -1, -1), f"{base}_time_reversed")
    length = ctx.emit("Gather", [ctx.emit("Shape", [x], base=f"{base}_shape"), ctx.ints(0, f"{base}_zero")],
                      base=f"{base}_time")
    last = ctx.emit("Sub", [length, ctx.ints(1, f"{base}_one")], base=f"{base}_last")
    return ctx.emit("Range", [last, ctx.ints(-1, f"{base}_end"), ctx.ints(-1, f"{base}_step")],
                    base=f"{base}_time_reversed")


def _direction_inputs(node, ctx, k, count, base):
    """The node's inputs for direction k: per-direction ones sliced to [k:k+1] (a positive-step Slice
    of the parameter itself, so the gradient reaches the original, whole initializer)."""
    inputs = list(node.input)
    if count == 1:
        return inputs
    for i in PER_DIRECTION[node.op_type]:
        if i < len(inputs) and inputs[i]:
            inputs[i] = ctx.emit("Slice", [inputs[i], ctx.ints([k], f"{base}_start"), ctx.ints([k + 1], f"{base}_stop"),
                                           ctx.ints([0], f"{base}_axis")], base=f"{base}_direction{k}")
    return inputs


def _one_direction(node, inputs, outputs, k, count, name):
    """A copy of `node` running forward over its direction k's inputs, every optional one listed. Its
    activations are the defaults (_kernel_limit), so the attribute is left out: the gradient kernel
    takes "sigmoid" but not the "Sigmoid" that ONNX writes."""
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute
                  if a.name not in ("direction", "activations", "activation_alpha", "activation_beta")}
    inputs = inputs + [""] * (ARITY[node.op_type] - len(inputs))
    return helper.make_node(node.op_type, inputs, outputs, name=name, domain=node.domain, direction="forward",
                            **attributes)
