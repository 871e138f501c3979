"""Benchmark: analysis time and peak memory against model size, on generated transformer encoders.

    python tools/bench_analyze.py [--sizes base,large] [--json out.json]

Prints a table (median of --repeats runs per size) and writes JSON. BERT-base size (12 layers,
hidden 768) is the reference point; the goal is under 2 s on a 2-core machine.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import onnx  # noqa: E402
from encoder import encoder, parameter_count  # noqa: E402

from onnxoto import graph, groups  # noqa: E402
from onnxoto.report import format_table, human  # noqa: E402

SIZES = {
    "tiny": dict(layers=2, hidden=128, heads=4, ffn=512, vocab=1000),
    "small": dict(layers=4, hidden=256, heads=4, ffn=1024, vocab=8000),
    "base": dict(layers=12, hidden=768, heads=12, ffn=3072, vocab=30522),
    "large": dict(layers=24, hidden=1024, heads=16, ffn=4096, vocab=30522),
}


def measure(path, repeats):
    times = {"load": [], "analyze": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        model = graph.load(path)
        t1 = time.perf_counter()
        analysis = groups.analyze(model)
        t2 = time.perf_counter()
        times["load"].append(t1 - t0)
        times["analyze"].append(t2 - t1)
    return {k: statistics.median(v) for k, v in times.items()}, analysis


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small,base")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="bench_analyze.json")
    args = parser.parse_args()
    rows, results = [], []
    with tempfile.TemporaryDirectory() as work:
        for name in args.sizes.split(","):
            model = encoder(**SIZES[name])
            params = parameter_count(model)
            path = os.path.join(work, f"{name}.onnx")
            onnx.save(model, path, save_as_external_data=params * 4 > 1.8e9, location=f"{name}.data")
            del model
            timing, analysis = measure(path, args.repeats)
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            total = timing["load"] + timing["analyze"]
            results.append({"size": name, "params": params, "groups": len(analysis.groups),
                            "prunable": len(analysis.prunable), "load_s": timing["load"],
                            "analyze_s": timing["analyze"], "total_s": total, "peak_rss_mb": peak_mb})
            rows.append([name, human(params), len(analysis.groups), len(analysis.prunable),
                         f"{timing['load']:.2f}", f"{timing['analyze']:.2f}", f"{total:.2f}", f"{peak_mb:.0f}"])
    print(format_table(["size", "params", "groups", "prunable", "load s", "analyze s", "total s", "peak RSS MB"], rows))
    print(f"(median of {args.repeats} runs; peak RSS is the process high-water mark so far)")
    with open(args.json, "w") as f:
        json.dump({"machine": os.uname().machine, "cpus": os.cpu_count(), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
