"""Generated inputs for a model: symbolic dims get sizes, integer indices stay within their table,
other integer inputs (masks, flags) are 0 or 1."""
import numpy as np
from onnx import helper, numpy_helper

from ..graph import fed_whole
from ..ops import attribute

SYMBOLIC_SIZE = 2
# ops an index passes through unchanged on its way to the table it indexes
_INDEX_PASS_THROUGH = {"Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Transpose", "Expand"}


def random_inputs(model, rng, batch=SYMBOLIC_SIZE, size=SYMBOLIC_SIZE):
    """Feed dict for a normalized graph.Model: a symbolic first axis gets `batch`, other symbolic axes `size`;
    a named symbol has one size wherever it appears, but the batch symbol is 1 in an input fed whole
    (a recurrent state's batch on axis 1: one state for every row)."""
    shapes = [model.shapes.get(name) or () for name in model.input_names]
    batch_symbols = {dims[0] for dims in shapes if dims and isinstance(dims[0], str)}
    feeds = {}
    for name, dims in zip(model.input_names, shapes):
        # an input fed whole (graph.fed_whole: a state 2 x batch x 128) is one state for every row: batch 1
        rows = 1 if fed_whole(dims) else batch
        shape = tuple(d if isinstance(d, int) else rows if k == 0 or d in batch_symbols else size
                      for k, d in enumerate(dims))
        dtype = helper.tensor_dtype_to_np_dtype(model.dtypes[name])
        if np.issubdtype(dtype, np.integer):
            limit = index_limit(model, name)
            feeds[name] = rng.integers(0, limit or 2, size=shape).astype(dtype)  # a mask or flag: 0 or 1
        elif dtype == np.bool_:
            feeds[name] = np.asarray(rng.random(shape) > 0.5)  # a scalar input still needs an array
        else:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def has_free_sizes(model):
    """Whether an input has a symbolic dim besides the batch (axis 0)."""
    return any(not isinstance(d, int) for name in model.input_names for d in (model.shapes.get(name) or ())[1:])


def has_symbolic_batch(model):
    """Whether an input's first axis is symbolic."""
    return any(not isinstance((model.shapes.get(name) or (1,))[0], int) for name in model.input_names)


def index_limit(model, name):
    """Row count of the smallest table the integer input `name` indexes (through Cast, Reshape, ...),
    or None when it indexes none (then it is a mask, a flag or a count)."""
    readers = {}
    for node in model.graph.node:
        for slot, tensor in enumerate(node.input):
            readers.setdefault(tensor, []).append((node, slot))
    limits, todo, seen = [], [name], set()
    while todo:
        tensor = todo.pop()
        for node, slot in readers.get(tensor, []):
            if node.op_type in _INDEX_PASS_THROUGH and slot == 0 and node.output[0] not in seen:
                seen.add(node.output[0])
                todo.append(node.output[0])
            elif node.op_type == "Gather" and slot == 1:
                table = model.shapes.get(node.input[0])
                axis = attribute(node, "axis", 0)
                if table and isinstance(table[axis], int):
                    limits.append(table[axis])
            elif node.op_type == "OneHot" and slot == 0 and node.input[1] in model.initializers:
                limits.append(int(numpy_helper.to_array(model.initializers[node.input[1]]).reshape(-1)[0]))
    return min(limits) if limits else None
