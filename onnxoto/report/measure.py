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
    models = [graph.load(path, strict=True, input_shapes=input_shapes) for path in paths]
    rng = np.random.default_rng(seed)
    if sample is not None:
        feeds, whole = {n: sample[n] for n in models[0].input_names}, graph.whole_inputs(models[0].proto)
        small, large = graph.take_rows(feeds, slice(0, 1), whole), graph.take_rows(feeds, slice(0, batch), whole)
    else:
        small, large = random_inputs(models[0], rng, batch=1), random_inputs(models[0], rng, batch=batch)
    sessions = [graph.session(path) for path in paths]
    ones, many = interleaved_ms(sessions, small, repeats), interleaved_ms(sessions, large, repeats)
    out = []
    for path, model, one, n in zip(paths, models, ones, many):
        params, flops = model_cost(model)
        folder = os.path.dirname(os.path.abspath(path))
        size = os.path.getsize(path) + sum(os.path.getsize(os.path.join(folder, f)) for f in _external_files(path))
        out.append({"params": int(params), "flops": int(flops), "file_bytes": int(size),
                    "latency_ms": {"batch1": one, "batchN": n, "N": len(next(iter(large.values())))}})
    return out


def _external_files(path):
    files = set()
    for t in onnx.load(path, load_external_data=False).graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                files.add(entry.value)
    return files
