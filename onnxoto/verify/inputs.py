"""Random inputs for a model: symbolic dims get small sizes, integer inputs stay within embedding range."""
import numpy as np
from onnx import helper

from ..ops import attribute

SYMBOLIC_SIZE = 2


def random_inputs(model, rng, batch=SYMBOLIC_SIZE):
    """Feed dict for a normalized graph.Model: a symbolic first axis gets `batch`, other symbolic axes 2."""
    feeds = {}
    for name in model.input_names:
        dims = model.shapes.get(name) or ()
        shape = tuple(d if isinstance(d, int) else batch if k == 0 else SYMBOLIC_SIZE for k, d in enumerate(dims))
        dtype = helper.tensor_dtype_to_np_dtype(model.dtypes[name])
        if np.issubdtype(dtype, np.integer):
            feeds[name] = rng.integers(0, _index_limit(model, name), size=shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[name] = np.asarray(rng.random(shape) > 0.5)  # a scalar input still needs an array
        else:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _index_limit(model, name):
    """Largest safe index for an integer input: the row count of the table it gathers from."""
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name:
            data = model.initializers.get(node.input[0])
            if data is not None:
                return int(data.dims[attribute(node, "axis", 0)])
    return 10
