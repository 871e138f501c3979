"""Measurements of a model file: size, params/FLOPs (from the file itself), CPU latency."""
import os
import statistics
import time

import numpy as np
import onnx

from .. import graph, progress
from ..groups import model_cost
from ..verify import random_inputs


def latency_ms(sess, feeds, warmup=3, repeats=20, max_seconds=10.0, desc="latency"):
    """Median wall time of one run, after warm-up; stops early past max_seconds."""
    for _ in range(warmup):
        sess.run(None, feeds)
    times, start = [], time.perf_counter()
    for _ in progress.bar(range(repeats), desc=desc, unit="run"):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1000)
        if time.perf_counter() - start > max_seconds:
            break
    return statistics.median(times)


def profile(path, batch=32, repeats=20, seed=0, sample=None):
    """{"params", "flops", "file_bytes", "latency_ms": {"batch1", "batchN"}} of an ONNX file.

    sample: a real batch (input name -> array, at least `batch` rows) to time with; else random inputs."""
    model = graph.load(path, strict=True)
    params, flops = model_cost(model)
    sess = graph.session(path)
    rng = np.random.default_rng(seed)
    if sample is not None:
        small = {n: sample[n][:1] for n in model.input_names}
        large = {n: sample[n][:batch] for n in model.input_names}
    else:
        small, large = random_inputs(model, rng, batch=1), random_inputs(model, rng, batch=batch)
    name = os.path.basename(path)
    latency = {"batch1": latency_ms(sess, small, repeats=repeats, desc=f"{name} batch 1"),
               "batchN": latency_ms(sess, large, repeats=repeats, desc=f"{name} batch {batch}"),
               "N": len(next(iter(large.values())))}
    folder = os.path.dirname(os.path.abspath(path))
    size = os.path.getsize(path) + sum(os.path.getsize(os.path.join(folder, f)) for f in _external_files(path))
    return {"params": int(params), "flops": int(flops), "file_bytes": int(size), "latency_ms": latency}


def _external_files(path):
    files = set()
    for t in onnx.load(path, load_external_data=False).graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                files.add(entry.value)
    return files
