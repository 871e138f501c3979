"""The onnxoto benchmark suite: one command, bench/results.json and bench/RESULTS.md.

    /work/venv/bin/python tools/bench_suite.py [--quick] [--parts quality,cost,deploy,scale]
                                               [--epochs 3] [--max-minutes 40] [--work /tmp/onnxoto-bench]

Parts (DESIGN.md §6):
  quality  Fashion-MNIST: the bundled ResNet (onnxoto/data/fmnist_resnet.onnx) and the VGG-style model of
           tools/train_fmnist_vgg.py (models/fmnist_vgg.onnx), each pruned by onnxoto.prune.prune with HESSO
           and HESSO-CRIC at group sparsity 0.3/0.5/0.7, round_to=8, on the bundled 10k training subset;
           test accuracy before/after on the full 10k test set (converted to the model's uint8 (N,1,28,28)
           input; falls back to the bundled 2k subset when the IDX files are missing), FLOPs/params kept.
           Extra runs with round_to=1 (HESSO) feed the deployment part. Each run is a fresh subprocess; its
           result is cached in WORK/runs.json, so an interrupted suite continues where it stopped. Runs are
           made in priority order and no new run starts after --max-minutes (the rest are listed as not run).
  cost     tools/bench_optim.py: HESSO step vs SGD step on numpy, and the optimizer's share of a real
           training step (goal <= 3%).
  deploy   for every pruned model: latency of dense and pruned at batch 1 and 32 (onnxruntime CPU, timed
           interleaved, medians), realised speed-up vs the ideal (FLOPs ratio); goal: realised >= 90% of ideal.
  scale    analysis time and peak RSS against model size on generated BERT-style encoders (tools/encoder.py);
           each size generated in one subprocess and loaded + analyzed in another (peak RSS per size).
"""
import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
DATA = os.path.join(REPO, "onnxoto", "data")
MODELS = {"resnet": os.path.join(DATA, "fmnist_resnet.onnx"), "vgg": os.path.join(REPO, "models", "fmnist_vgg.onnx")}
SPARSITIES = (0.3, 0.5, 0.7)
SCALE_SIZES = {
    "tiny": dict(layers=2, hidden=128, heads=4, ffn=512, vocab=1000),
    "small": dict(layers=4, hidden=256, heads=4, ffn=1024, vocab=8000),
    "base": dict(layers=12, hidden=768, heads=12, ffn=3072, vocab=30522),
    "large": dict(layers=24, hidden=1024, heads=16, ffn=4096, vocab=30522),
    "xl": dict(layers=32, hidden=1600, heads=16, ffn=6400, vocab=30522),  # ~1.0B parameters, external data
}


def now():
    return time.perf_counter()


# ----------------------------------------------------------------------------------------------- machine
def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    import onnxruntime
    return {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(), "cpu": cpu,
            "memory_mb": mem, "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__, "load_avg_at_start": os.getloadavg()}


# ----------------------------------------------------------------------------------------------- quality
def test_set(work):
    """(path of an npz with x, labels, description): the full 10k test set if the IDX files exist."""
    path = os.path.join(work, "fmnist_test_full.npz")
    if os.path.exists(path):
        return path, "full Fashion-MNIST test set (10,000)"
    try:
        import fmnist
        x, y = fmnist.load("t10k")
        np.savez(path, x=x[:, None], labels=y)
        return path, "full Fashion-MNIST test set (10,000)"
    except FileNotFoundError:
        return os.path.join(DATA, "fmnist_test.npz"), "bundled stratified test subset (2,000)"


def run_plan(quick):
    """(model, optimizer, sparsity, round_to) in priority order."""
    if quick:
        return [("resnet", "hesso", 0.5, 8), ("resnet", "hesso", 0.5, 1)]
    plan = [("resnet", "hesso", 0.5, 8), ("resnet", "hesso", 0.3, 8), ("resnet", "hesso", 0.7, 8),
            ("resnet", "hesso-cric", 0.5, 8), ("vgg", "hesso", 0.5, 8), ("resnet", "hesso", 0.5, 1),
            ("vgg", "hesso", 0.3, 8), ("vgg", "hesso", 0.7, 8), ("vgg", "hesso", 0.5, 1),
            ("resnet", "hesso-cric", 0.3, 8), ("resnet", "hesso-cric", 0.7, 8),
            ("vgg", "hesso-cric", 0.5, 8), ("vgg", "hesso-cric", 0.3, 8), ("vgg", "hesso-cric", 0.7, 8),
            ("resnet", "hesso", 0.3, 1), ("resnet", "hesso", 0.7, 1), ("vgg", "hesso", 0.3, 1),
            ("vgg", "hesso", 0.7, 1)]
    return plan


def run_key(model, optimizer, sparsity, round_to, epochs):
    return f"{model}-{optimizer}-s{sparsity}-r{round_to}-e{epochs}"


def one_run(spec):
    """In a fresh process: prune one model, write its record as JSON to spec['out']."""
    from onnxoto.prune import PruneOptions, prune
    opts = PruneOptions(target_sparsity=spec["sparsity"], optimizer=spec["optimizer"], epochs=spec["epochs"],
                        round_to=spec["round_to"], seed=0)
    t0 = now()
    r = prune(MODELS[spec["model"]], os.path.join(DATA, "fmnist_train.npz"), spec["output"], val=spec["val"],
              options=opts, log=lambda line: print(line, flush=True))
    record = {k: spec[k] for k in ("model", "optimizer", "sparsity", "round_to", "epochs")}
    record.update({"minutes": (now() - t0) / 60, "pruned_path": spec["output"], "model_path": MODELS[spec["model"]],
                   "group_sparsity": r.group_sparsity, "verified": bool(r.verified), "max_rel_diff": r.max_rel_diff,
                   "acc_before": r.dense.get("metric"), "acc_after": r.pruned.get("metric"),
                   "params_dense": r.dense["params"], "params_pruned": r.pruned["params"],
                   "flops_dense": r.dense["flops"], "flops_pruned": r.pruned["flops"],
                   "params_kept": r.pruned["params"] / r.dense["params"],
                   "flops_kept": r.pruned["flops"] / r.dense["flops"],
                   "final_loss": r.history[-1]["loss"] if r.history else None})
    with open(spec["out"], "w") as f:
        json.dump(record, f, indent=2, default=float)


def part_quality(args, log):
    cache_path = os.path.join(args.work, "runs.json")
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
    val, val_desc = test_set(args.work)
    deadline = now() + args.max_minutes * 60
    skipped = []
    for model, optimizer, sparsity, round_to in run_plan(args.quick):
        key = run_key(model, optimizer, sparsity, round_to, args.epochs)
        if key in cache:
            continue
        if not os.path.exists(MODELS[model]):
            skipped.append({"run": key, "why": f"{os.path.relpath(MODELS[model], REPO)} missing "
                                               "(tools/train_fmnist_vgg.py)"})
            continue
        if now() > deadline:
            skipped.append({"run": key, "why": f"time budget ({args.max_minutes} min) spent"})
            continue
        spec = {"model": model, "optimizer": optimizer, "sparsity": sparsity, "round_to": round_to,
                "epochs": args.epochs, "val": val, "output": os.path.join(args.work, f"{key}.onnx"),
                "out": os.path.join(args.work, f"{key}.json")}
        log(f"[quality] {key} ...")
        with open(os.path.join(args.work, f"{key}.log"), "w") as logf:
            rc = subprocess.call([sys.executable, os.path.abspath(__file__), "--one-run", json.dumps(spec)],
                                 stdout=logf, stderr=subprocess.STDOUT)
        if rc != 0 or not os.path.exists(spec["out"]):
            skipped.append({"run": key, "why": f"failed (exit {rc}), see {key}.log"})
            log(f"[quality] {key} FAILED (exit {rc})")
            continue
        cache[key] = json.load(open(spec["out"]))
        json.dump(cache, open(cache_path, "w"), indent=2)
        r = cache[key]
        log(f"[quality] {key}: acc {r['acc_before']:.4f} -> {r['acc_after']:.4f}, flops kept "
            f"{r['flops_kept']:.3f}, {r['minutes']:.1f} min")
    runs = [cache[k] for k in cache if cache[k]["epochs"] == args.epochs]
    return {"train_data": "onnxoto/data/fmnist_train.npz (bundled stratified 10k of the 60k training set)",
            "test_data": val_desc, "epochs": args.epochs, "batch_size": 64, "base": "sgd lr 0.01 momentum 0.9",
            "max_minutes": args.max_minutes, "runs": runs, "not_run": skipped}


# ----------------------------------------------------------------------------------------------- cost
def part_cost(args, log):
    import bench_optim
    sizes = "1e5,1e6" if args.quick else args.optim_sizes
    log(f"[cost] bench_optim --sizes {sizes}")
    return bench_optim.main(["--sizes", sizes, "--repeats", "5" if args.quick else "15",
                             "--train-repeats", "10" if args.quick else "40"])


# ----------------------------------------------------------------------------------------------- deploy
def _median_latencies(sessions, feeds, repeats):
    """Median ms per session, timed interleaved (round-robin) so load changes hit all alike."""
    for s in sessions:
        for _ in range(3):
            s.run(None, feeds)
    times = [[] for _ in sessions]
    for _ in range(repeats):
        for k, s in enumerate(sessions):
            t0 = now()
            s.run(None, feeds)
            times[k].append((now() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def part_deploy(args, runs, log):
    from onnxoto.graph import session
    test = np.load(os.path.join(DATA, "fmnist_test.npz"))
    out = []
    for model in sorted({r["model"] for r in runs}):
        mine = [r for r in runs if r["model"] == model and os.path.exists(r["pruned_path"])]
        if not mine:
            continue
        dense = session(MODELS[model])
        pruned = [session(r["pruned_path"]) for r in mine]
        for batch, repeats in ((1, 10 if args.quick else 60), (32, 5 if args.quick else 20)):
            feeds = {"x": test["x"][:batch]}
            lat = _median_latencies([dense] + pruned, feeds, repeats)
            for r, ms in zip(mine, lat[1:]):
                ideal = r["flops_dense"] / r["flops_pruned"]
                realised = lat[0] / ms
                out.append({"model": model, "optimizer": r["optimizer"], "sparsity": r["sparsity"],
                            "round_to": r["round_to"], "batch": batch, "repeats": repeats,
                            "dense_ms": lat[0], "pruned_ms": ms, "ideal_speedup": ideal,
                            "realised_speedup": realised, "realised_over_ideal": realised / ideal,
                            "goal_met": realised >= 0.9 * ideal})
        log(f"[deploy] {model}: {len(mine)} pruned models timed")
    return {"threads": "onnxruntime default (all cores)", "rows": out}


# ----------------------------------------------------------------------------------------------- scale
def scale_generate(name, path):
    from encoder import encoder, parameter_count
    import onnx
    model = encoder(**SCALE_SIZES[name])
    params = parameter_count(model)
    external = params * 4 > 1.8e9
    onnx.save(model, path, save_as_external_data=external, location=f"{name}.data" if external else None)
    print(json.dumps({"params": params, "external_data": external}))


def _hwm_kb():
    """This process's peak RSS (VmHWM): unlike ru_maxrss it is not inherited from the forking parent."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def scale_measure(path):
    base_rss = _hwm_kb()
    from onnxoto import graph, groups
    imported_rss = _hwm_kb()
    t0 = now()
    model = graph.load(path)
    t1 = now()
    analysis = groups.analyze(model)
    t2 = now()
    print(json.dumps({"load_s": t1 - t0, "analyze_s": t2 - t1, "total_s": t2 - t0, "groups": len(analysis.groups),
                      "prunable": len(analysis.prunable), "peak_rss_mb": _hwm_kb() / 1024, "rss_after_import_mb": imported_rss / 1024,
                      "rss_at_start_mb": base_rss / 1024}))


def part_scale(args, log):
    sizes = ["tiny", "small"] if args.quick else args.scale_sizes.split(",")
    folder = os.path.join(args.work, "scale")
    os.makedirs(folder, exist_ok=True)
    rows = []
    for name in sizes:
        path = os.path.join(folder, f"{name}.onnx")
        log(f"[scale] {name}: generating")
        gen = subprocess.run([sys.executable, os.path.abspath(__file__), "--scale-generate", name, path],
                             capture_output=True, text=True)
        if gen.returncode != 0:
            rows.append({"size": name, "error": gen.stderr.strip().splitlines()[-1:]})
            log(f"[scale] {name}: generation failed")
            continue
        info = json.loads(gen.stdout.strip().splitlines()[-1])
        measures = []
        for _ in range(1 if name in ("large", "xl") or args.quick else 3):
            m = subprocess.run([sys.executable, os.path.abspath(__file__), "--scale-measure", path],
                               capture_output=True, text=True)
            if m.returncode != 0:
                measures = None
                rows.append({"size": name, **info, "error": m.stderr.strip().splitlines()[-1:]})
                break
            measures.append(json.loads(m.stdout.strip().splitlines()[-1]))
        if measures:
            row = {"size": name, **SCALE_SIZES[name], **info, "repeats": len(measures)}
            for key in ("load_s", "analyze_s", "total_s", "peak_rss_mb"):
                row[key] = statistics.median(x[key] for x in measures)
            row.update({k: measures[0][k] for k in ("groups", "prunable", "rss_after_import_mb")})
            row["model_mb"] = info["params"] * 4 / 2 ** 20
            rows.append(row)
            log(f"[scale] {name}: {info['params']:,} params, {row['total_s']:.2f} s, {row['peak_rss_mb']:.0f} MB")
        for f in os.listdir(folder):
            if f.startswith(name + "."):
                os.remove(os.path.join(folder, f))
    return {"rows": rows}


# ----------------------------------------------------------------------------------------------- report
def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def markdown(results):
    m = results["machine"]
    lines = ["# onnxoto benchmarks", "",
             f"Generated by `tools/bench_suite.py` on {m['date']}: {m['cores']} cores ({m['cpu']}), "
             f"{m['memory_mb']} MB RAM, onnxruntime {m['onnxruntime']}, numpy {m['numpy']}, Python {m['python']}. "
             f"Load average at start {', '.join(f'{x:.1f}' for x in m['load_avg_at_start'])} (the machine was "
             "shared with other jobs: absolute times are noisy; ratios are measured within one run, interleaved, "
             "as medians). Total suite time " + f"{results.get('suite_minutes', 0):.0f} min.", ""]
    lines += results.get("notes_top", [])
    q = results.get("quality")
    if q:
        lines += ["## Quality (Fashion-MNIST)", "",
                  f"Pruned with `onnxoto.prune.prune`, {q['epochs']} epochs, batch {q['batch_size']}, {q['base']}, "
                  f"on {q['train_data']}; accuracy on the {q['test_data']}. Pruning from 10% to 40% of the steps "
                  "in 10 periods (the default). 'verified': the cut model equals the trained one on real batches.",
                  ""]
        rows = []
        for r in sorted(q["runs"], key=lambda r: (r["model"], r["round_to"] != 8, r["optimizer"], r["sparsity"])):
            rows.append([r["model"], r["optimizer"], r["sparsity"], r["round_to"], f"{r['group_sparsity']:.3f}",
                         pct(r["acc_before"]), pct(r["acc_after"]),
                         f"{100 * (r['acc_after'] - r['acc_before']):+.1f}", pct(r["params_kept"]),
                         pct(r["flops_kept"]), "yes" if r["verified"] else "NO", f"{r['minutes']:.1f}"])
        lines += [table(["model", "optimizer", "target", "round_to", "group sparsity", "acc before", "acc after",
                         "Δ pts", "params kept", "FLOPs kept", "verified", "minutes"], rows), ""]
        if q["not_run"]:
            lines += ["Not run: " + "; ".join(f"`{s['run']}` ({s['why']})" for s in q["not_run"]), ""]
    c = results.get("cost")
    if c:
        import bench_optim
        lines += ["## Training cost (tools/bench_optim.py)", "",
                  "One HESSO step (SGD momentum base, conv-like groups, ZIG = output channel, 50% of ZIGs marked) "
                  "vs one plain SGD step over the same buffers, numpy; medians, timed interleaved. 'fade': inside "
                  "a pruning period; 'held': after it (zeros held); 'period start': the step that scores and "
                  "selects (once per period, 10 per run; a single timing).", "",
                  bench_optim.synthetic_table(c["synthetic"]), ""]
        t = c.get("training")
        if t:
            ok = t["share_direct"] <= t["goal_share"]
            lines += [f"Real step, bundled ResNet ({t['params']:,} trainable params), batch {t['batch']}, HESSO "
                      f"fading 50% of the ZIGs, median of {t['repeats']} interleaved: `train_step` "
                      f"{t['train_step_ms']:.1f} ms, `train_step` + `opt.step` {t['train_step_plus_opt_ms']:.1f} ms, "
                      f"`opt.step` alone {t['opt_step_ms']:.2f} ms. **Optimizer share "
                      f"{100 * t['share_direct']:.2f}%** (opt.step / whole step; goal ≤ 3%: "
                      f"{'met' if ok else 'MISSED'}). The difference of the two medians gives "
                      f"{100 * t['share']:.1f}%, which is within the noise of the training step on this shared "
                      f"machine. The period-start step (scoring + selection) took {t['select_step_ms']:.1f} ms, "
                      "once per period.", ""]
    d = results.get("deploy")
    if d and d["rows"]:
        lines += ["## Deployment: realised vs ideal speed-up", "",
                  "onnxruntime CPU, " + d["threads"] + ", dense and pruned models timed round-robin, medians. "
                  "Ideal = dense FLOPs / pruned FLOPs; goal: realised ≥ 90% of ideal.", ""]
        rows = [[r["model"], r["optimizer"], r["sparsity"], r["round_to"], r["batch"], f"{r['dense_ms']:.3f}",
                 f"{r['pruned_ms']:.3f}", f"{r['ideal_speedup']:.2f}×", f"{r['realised_speedup']:.2f}×",
                 pct(r["realised_over_ideal"]), "met" if r["goal_met"] else "MISSED"]
                for r in sorted(d["rows"], key=lambda r: (r["model"], r["batch"], r["optimizer"], r["sparsity"],
                                                          r["round_to"]))]
        lines += [table(["model", "optimizer", "target", "round_to", "batch", "dense ms", "pruned ms", "ideal",
                         "realised", "realised/ideal", "goal"], rows), ""]
        lines += results.get("notes_deploy", [])
    s = results.get("scale")
    if s and s["rows"]:
        lines += ["## Scale: analysis of generated BERT-style encoders", "",
                  "`graph.load` + `groups.analyze` in a fresh process per size (peak RSS is that process's "
                  "high-water mark, including ~" + f"{next((r.get('rss_after_import_mb', 0) for r in s['rows'] if 'rss_after_import_mb' in r), 0):.0f}"
                  + " MB for the imports); models over 1.8 GB saved with external data. Median of 3 runs "
                  "(1 for large and xl).", ""]
        rows = [[r["size"], f"{r['params']:,}" if "params" in r else "-",
                 f"{r.get('layers', '-')}×{r.get('hidden', '-')}",
                 "yes" if r.get("external_data") else "no", r.get("groups", "-"), r.get("prunable", "-"),
                 f"{r['load_s']:.2f}" if "load_s" in r else "-", f"{r['analyze_s']:.2f}" if "analyze_s" in r else "-",
                 f"{r['total_s']:.2f}" if "total_s" in r else "-",
                 f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else str(r.get("error"))] for r in s["rows"]]
        lines += [table(["size", "params", "layers×hidden", "external data", "groups", "prunable", "load s",
                         "analyze s", "total s", "peak RSS MB"], rows), ""]
    lines += results.get("notes", [])
    lines += ["## Regenerate", "", "```bash", results["command"], "```", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 epoch, one sparsity, small sizes")
    ap.add_argument("--parts", default="quality,cost,deploy,scale")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-minutes", type=float, default=40, help="no new quality run starts after this")
    ap.add_argument("--optim-sizes", default="1e5,1e6,1e7,1e8")
    ap.add_argument("--scale-sizes", default="tiny,small,base,large,xl")
    ap.add_argument("--work", default="/tmp/onnxoto-bench", help="pruned models, logs and the run cache")
    ap.add_argument("--out", default=os.path.join(REPO, "bench"))
    ap.add_argument("--one-run", help=argparse.SUPPRESS)
    ap.add_argument("--scale-generate", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--scale-measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_run:
        return one_run(json.loads(args.one_run))
    if args.scale_generate:
        return scale_generate(*args.scale_generate)
    if args.scale_measure:
        return scale_measure(args.scale_measure)
    if args.quick:
        args.epochs = 1
        args.work = args.work.rstrip("/") + "-quick"
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    parts = args.parts.split(",")
    log = lambda line: print(line, flush=True)  # noqa: E731
    started = now()
    json_path = os.path.join(args.out, "results.json")
    results = json.load(open(json_path)) if os.path.exists(json_path) and not args.quick else {}
    results["machine"] = machine()
    results["command"] = (f"/work/venv/bin/python tools/bench_suite.py --epochs {args.epochs} "
                          f"--max-minutes {args.max_minutes:g} --scale-sizes {args.scale_sizes}"
                          + (" --quick" if args.quick else ""))
    if "quality" in parts:
        results["quality"] = part_quality(args, log)
    if "cost" in parts:
        results["cost"] = part_cost(args, log)
    if "deploy" in parts:
        runs = (results.get("quality") or {}).get("runs") or []
        results["deploy"] = part_deploy(args, runs, log)
    if "scale" in parts:
        results["scale"] = part_scale(args, log)
    results["suite_minutes"] = (now() - started) / 60
    notes = os.path.join(args.out, "NOTES.md")  # hand-written findings, appended to RESULTS.md
    results["notes"] = [open(notes).read()] if os.path.exists(notes) and not args.quick else []
    name = "results-quick" if args.quick else "results"
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)
    with open(os.path.join(args.out, "RESULTS-quick.md" if args.quick else "RESULTS.md"), "w") as f:
        f.write(markdown(results))
    log(f"wrote {args.out}/{name}.json and RESULTS{'-quick' if args.quick else ''}.md")


if __name__ == "__main__":
    main()
