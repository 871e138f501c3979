"""Where the latency of a cut model goes: onnxruntime's own profiler, per operator of the graph it
actually runs (the optimized graph, fusions and NCHWc reorders included), the dense model against
cuts of it at given widths, all timed in one process. Prints a table per operator kind and writes
JSON (per node and per kind, 10th percentiles over runs) and the optimized graphs.

    python tools/profile_ops.py [--model M] [--batch 64] [--threads 1] [--runs 60]
        [--cut name=stem.0.weight:0=8,blocks.1.conv2.weight:0=16,...] [--json bench/profile_ops.json]
"""
import argparse
import collections
import glob
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from onnxoto import graph, groups  # noqa: E402
from onnxoto.groups import keep_all  # noqa: E402
from onnxoto.surgery import cut  # noqa: E402
from onnxoto.verify import random_inputs  # noqa: E402

DEMO = os.path.join(ROOT, "onnxoto", "data", "fmnist_resnet.onnx")
# the FLOPs-targeted demo with --round-to auto (16), bench/latency_demo.json
QUANTILE = 10
DEMO_CUT = ("auto16=stem.0.weight:0=8,blocks.1.conv2.weight:0=16,blocks.3.conv2.weight:0=32")


def parse_cut(text):
    name, _, rest = text.partition("=")
    widths = {}
    for item in filter(None, rest.split(",")):
        gid, _, w = item.rpartition("=")
        widths[gid] = float(w) if gid == "*" else int(w)
    return name, widths


def keep_for(analysis, widths):
    """Keep masks: each named group cut to its first `width` channels; "*=F" cuts every group to
    fraction F of its channels (rounded to a multiple of 4, at least 1)."""
    keep = keep_all(analysis.prunable)
    every = widths.get("*")
    for gid in keep:
        width = widths.get(gid)
        if width is None and every is not None:
            width = max(1, int(round(every * len(keep[gid]) / 4)) * 4)
        if width is not None:
            keep[gid] = np.arange(len(keep[gid])) < width
    return keep


def make_session(proto_bytes, threads, work, tag, profile, spin=True):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if not spin:  # several sessions' pools in one process: a spinning idle pool takes a core from the next
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.optimized_model_filepath = os.path.join(work, f"{tag}.optimized.onnx")
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(work, f"{tag}_profile")
    return ort.InferenceSession(proto_bytes, options, providers=["CPUExecutionProvider"])


def node_times(profile_path, runs):
    """{node name: (op type, µs per run)} of the profiler's Node events, warm-up dropped: the 10th
    percentile, as the wall times (load on a shared machine only ever adds time)."""
    with open(profile_path) as f:
        events = json.load(f)
    per_node = collections.defaultdict(list)
    kinds = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        per_node[node].append(e["dur"])
        kinds[node] = e["args"].get("op_name", "?")
    return {n: (kinds[n], float(np.percentile(t[-runs:], QUANTILE))) for n, t in per_node.items()}


def op_types(path):
    model = onnx.load(path)
    return collections.Counter(f"{n.domain + ':' if n.domain else ''}{n.op_type}" for n in model.graph.node)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEMO)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (0: onnxruntime's default)")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--no-spin", action="store_true", help="idle intra-op threads sleep (for --threads 0)")
    ap.add_argument("--cut", action="append", default=None, help="NAME=group=width,group=width,...")
    ap.add_argument("--extra", action="append", default=[], help="NAME=path of another model to profile")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "profile_ops.json"))
    ap.add_argument("--keep-graphs", default=None, help="folder to keep the optimized graphs in")
    args = ap.parse_args()
    model = graph.load(args.model, strict=True)
    analysis = groups.analyze(model)
    protos, flops = {"dense": model.proto}, {"dense": 1.0}
    for text in args.cut or [DEMO_CUT]:
        name, widths = parse_cut(text)
        keep = keep_for(analysis, widths)
        protos[name] = cut(model, analysis.groups, keep)
        flops[name] = analysis.predict_cost(keep)[1] / analysis.flops
    for text in args.extra:
        name, _, path = text.partition("=")
        protos[name] = onnx.load(path)
    feeds = random_inputs(model, np.random.default_rng(0), batch=args.batch)
    with tempfile.TemporaryDirectory(prefix="onnxoto-profile-") as work:
        work = args.keep_graphs or work
        os.makedirs(work, exist_ok=True)
        spin = not args.no_spin
        timed = {k: make_session(p.SerializeToString(), args.threads, work, k, False, spin) for k, p in protos.items()}
        profiled = {k: make_session(p.SerializeToString(), args.threads, work, k + "_p", True, spin)
                    for k, p in protos.items()}
        wall = {k: [] for k in protos}
        for s in list(timed.values()) + list(profiled.values()):
            for _ in range(3):
                s.run(None, feeds)
        for _ in range(args.runs):  # round-robin: load falls on all alike
            for k in protos:
                start = time.perf_counter()
                timed[k].run(None, feeds)
                wall[k].append((time.perf_counter() - start) * 1000)
                profiled[k].run(None, feeds)
        results = {}
        for k, s in profiled.items():
            path = s.end_profiling()
            nodes = node_times(path, args.runs)
            by_kind = collections.defaultdict(float)
            for kind, us in nodes.values():
                by_kind[kind] += us
            results[k] = {"flops_kept": flops.get(k), "wall_ms_p10": float(np.percentile(wall[k], 10)),
                          "wall_ms_median": float(np.median(wall[k])),
                          "kernel_ms": sum(us for _, us in nodes.values()) / 1000,
                          "by_kind_ms": {kk: v / 1000 for kk, v in sorted(by_kind.items())},
                          "nodes_us": {n: [kind, us] for n, (kind, us) in nodes.items()},
                          "optimized_op_types": dict(op_types(os.path.join(work, f"{k}.optimized.onnx")))}
            for f in glob.glob(path):
                os.remove(f)
    report(results)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": os.path.basename(args.model),
                   "batch": args.batch, "threads": args.threads or "default", "runs": args.runs, "spin": spin,
                   "onnxruntime": ort.__version__, "load_average": os.getloadavg(), "models": results}, f, indent=1)


def report(results):
    names = list(results)
    dense = results["dense"]
    kinds = sorted({k for r in results.values() for k in r["by_kind_ms"]})
    print(f"{'op kind (ms)':28s}" + "".join(f"{n:>14s}" for n in names))
    for kind in kinds:
        print(f"{kind:28s}" + "".join(f"{results[n]['by_kind_ms'].get(kind, 0):14.3f}" for n in names))
    for label, key in (("sum of kernels", "kernel_ms"), ("wall p10", "wall_ms_p10"), ("wall median", "wall_ms_median")):
        print(f"{label:28s}" + "".join(f"{results[n][key]:14.3f}" for n in names))
    print(f"{'ratio to dense (wall p10)':28s}" + "".join(f"{results[n]['wall_ms_p10'] / dense['wall_ms_p10']:14.3f}"
                                                         for n in names))
    print(f"{'FLOPs kept':28s}" + "".join(f"{results[n]['flops_kept'] or 0:14.3f}" for n in names))
    for n in names:
        print(n, "optimized graph:", dict(sorted(results[n]["optimized_op_types"].items())))
    print("\nper node (µs):")
    all_nodes = list(dict.fromkeys(node for r in results.values() for node in r["nodes_us"]))
    for node in all_nodes:
        row = [results[n]["nodes_us"].get(node) for n in names]
        kind = next(r[0] for r in row if r)
        print(f"{node[:60]:60s} {kind:18s}" + "".join(f"{r[1] if r else 0:10.0f}" for r in row))


if __name__ == "__main__":
    main()
