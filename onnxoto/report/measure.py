"""Measurements of a model file: size, params/FLOPs (from the file itself), CPU latency."""
import os

import numpy as np
import onnx

from .. import graph
from ..groups import model_cost
from ..latency import interleaved_ms
from ..verify import random_inputs


def profile(path, batch=32, repeats=20, seed=0, sample=None, input_shapes=None):
    """{"params", "flops", "file_bytes", "latency_ms": {"batch1", "batchN"}} of an ONNX file.

    sample: a real batch (input name -> array, at least `batch` rows) to time with; else random inputs.
    input_shapes: sizes bound to symbolic input dims (FLOPs and random inputs at those sizes)."""
    return profile_pair([path], batch, repeats, seed, sample, input_shapes)[0]


def profile_pair(paths, batch=32, repeats=20, seed=0, sample=None, input_shapes=None):
    """profile() of models with the same inputs (dense and pruned), their latencies timed together,
    round-robin, so that their ratio survives a shared machine's load."""
    models = [graph.load(path, strict=True, input_shapes=_still_free(path, input_shapes)) for path in paths]
    rng = np.random.default_rng(seed)
    if sample is not None:
        feeds, whole = {n: sample[n] for n in models[0].input_names}, graph.whole_inputs(models[0].proto)
        small, large = graph.take_rows(feeds, slice(0, 1), whole), graph.take_rows(feeds, slice(0, batch), whole)
    else:
        small, large = random_inputs(models[0], rng, batch=1), random_inputs(models[0], rng, batch=batch)
    sessions = [graph.session(path) for path in paths]
    name = os.path.basename(paths[-1])
    ones = interleaved_ms(sessions, [_fitted(m, small) for m in models], repeats, desc=f"{name} batch 1")
    many = interleaved_ms(sessions, [_fitted(m, large) for m in models], repeats,
                          desc=f"{name} batch {len(next(iter(large.values())))}")
    out = []
    for path, model, one, n in zip(paths, models, ones, many):
        params, flops = model_cost(model)
        folder = os.path.dirname(os.path.abspath(path))
        size = os.path.getsize(path) + sum(os.path.getsize(os.path.join(folder, f)) for f in _external_files(path))
        out.append({"params": int(params), "flops": int(flops), "file_bytes": int(size),
                    "latency_ms": {"batch1": one, "batchN": n, "N": len(next(iter(large.values())))}})
    return out


def _still_free(path, input_shapes):
    """--input-shape bindings for one of the models: a size the file declares static stays its own (a
    cut KV cache has fewer heads than the dense model's bindings say)."""
    if not input_shapes:
        return input_shapes
    declared = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
                for v in onnx.load(path, load_external_data=False).graph.input}
    fitted = {}
    for name, dims in input_shapes.items():
        own = declared.get(name)
        fitted[name] = tuple(dims) if own is None or len(own) != len(dims) else \
            tuple(o if o is not None and d != -1 else d for d, o in zip(dims, own))
    return fitted


def _fitted(model, feeds):
    """The feeds cut to the model's static input sizes (timing only: which positions does not matter)."""
    out = {}
    for name, array in feeds.items():
        shape = model.shapes.get(name)
        if shape is not None and array.ndim and len(shape) == array.ndim:  # a 0-d input stays an array
            array = array[tuple(slice(0, d) if isinstance(d, int) else slice(None) for d in shape)]
        out[name] = array
    return out


def _external_files(path):
    files = set()
    for t in onnx.load(path, load_external_data=False).graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                files.add(entry.value)
    return files
