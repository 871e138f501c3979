"""Scale benchmark: a generated ~1B-parameter Llama-style decoder with its weights in external data
(issue 18): `onnxoto analyze` time and peak RSS against the model's size, then a cut (a quarter of the
KV-head groups and 30% of the MLP channels of every layer) written with external data beside it, and
the written model run once by onnxruntime.

    # 1. build the model (a python with torch and transformers; nothing downloaded, random weights)
    /work/wt/torchenv/bin/python tools/bench_scale.py make --out /tmp/scale
    # 2. measure (onnxoto's own environment)
    .venv/bin/python tools/bench_scale.py bench --out /tmp/scale --json bench/scale.json

Each measured step runs in its own process, so its peak RSS is its own (os.wait4's ru_maxrss)."""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ~0.94B parameters: hidden 2048, 18 layers, 16 query heads over 4 KV heads, SwiGLU 5632, vocab 32000
SIZES = dict(hidden=2048, layers=18, heads=16, kv_heads=4, intermediate=5632, vocab=32000)
MODEL = "decoder_1b.onnx"


def make(out):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from make_decoders import build_decoder, export

    os.makedirs(out, exist_ok=True)
    lm = build_decoder("llama", tied=False, **SIZES)
    params = sum(p.numel() for p in lm.parameters())
    export(lm, os.path.join(out, MODEL), "legacy", cache=False)
    print(f"{MODEL}: {params / 1e9:.2f}B parameters, {size_of(os.path.join(out, MODEL)) / 1e9:.2f} GB")


def size_of(path):
    folder = os.path.dirname(os.path.abspath(path))
    data = os.path.join(folder, os.path.basename(path) + ".data")
    return os.path.getsize(path) + (os.path.getsize(data) if os.path.exists(data) else 0)


def measured(args):
    """(seconds, peak RSS in bytes, stdout) of a command in its own process."""
    start = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{output[-2000:]}")
    return seconds, usage.ru_maxrss * 1024, output


def cut_here(model_path, out_path):
    """The cut step (run in its own process): analyze, cut the first quarter of each layer's KV-head
    groups and 30% of each MLP group, write with external data, run once."""
    import numpy as np

    from onnxoto import graph, groups, surgery
    from onnxoto.groups import keep_all

    model = graph.load(model_path)
    analysis = groups.analyze(model)
    keep = keep_all(analysis.prunable)
    cut_groups = {}
    for g in analysis.prunable:
        share = 0.25 if g.num_zigs <= 2 * SIZES["kv_heads"] else 0.3
        removed = int(g.num_zigs * share)
        if removed:
            keep[g.id][:removed] = False
            cut_groups[g.id] = (g.num_zigs, g.num_zigs - removed)
    pruned = surgery.cut(model, analysis.groups, keep)
    graph.save(pruned, out_path, external=True)
    session = graph.session(out_path)
    ids = np.random.default_rng(0).integers(0, SIZES["vocab"], size=(1, 8)).astype(np.int64)
    logits = session.run(None, {session.get_inputs()[0].name: ids})[0]
    print(json.dumps({"groups_cut": len(cut_groups), "logits_shape": list(logits.shape),
                      "finite": bool(np.isfinite(logits).all()),
                      "kept_widths": sorted({v for v in cut_groups.values()})}))


def bench(out, json_path):
    model = os.path.join(out, MODEL)
    size = size_of(model)
    onnxoto = [sys.executable, "-m", "onnxoto"]
    analyze_s, analyze_rss, analyze_out = measured([*onnxoto, "analyze", model, "--json", os.path.join(out, "a.json")])
    pruned = os.path.join(out, "decoder_1b.pruned.onnx")
    cut_s, cut_rss, cut_out = measured([sys.executable, __file__, "cut", model, pruned])
    cut = json.loads(cut_out.strip().splitlines()[-1])
    row = {"model": MODEL, "sizes": SIZES, "bytes": size, "analyze_s": analyze_s, "analyze_peak_rss": analyze_rss,
           "analyze_rss_over_size": analyze_rss / size, "analyze_summary": analyze_out.strip().splitlines()[-2:],
           "cut_and_write_s": cut_s, "cut_peak_rss": cut_rss, "pruned_bytes": size_of(pruned), **cut,
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}
    print(f"| model | size | analyze | analyze peak RSS | cut + write | cut peak RSS | pruned size |\n|---|---|---|---|---|---|---|\n"
          f"| {MODEL} | {size / 1e9:.2f} GB | {analyze_s:.1f} s | {analyze_rss / 1e9:.2f} GB ({analyze_rss / size:.2f}x) "
          f"| {cut_s:.1f} s | {cut_rss / 1e9:.2f} GB | {size_of(pruned) / 1e9:.2f} GB |")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(row, f, indent=1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["make", "bench", "cut"])
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--out", default="/tmp/onnxoto-scale")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.step == "make":
        make(args.out)
    elif args.step == "cut":
        cut_here(*args.paths)
    else:
        bench(args.out, args.json)


if __name__ == "__main__":
    main()
