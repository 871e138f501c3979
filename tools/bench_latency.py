"""Latency targets measured on this machine: the bundled Fashion-MNIST ResNet and VGG pruned with
`--target-latency` (the knapsack over a latency table) and with `--target-flops` (`--round-to 8`),
and the demo at `--target-latency 0.5` (`--round-to 1` and `auto`) and at `--target-flops 0.5 --round-to
auto`. Each run's
latency is timed against the dense model round-robin in one process (ratios, lower quartiles);
accuracy on the bundled 2k test images. Prints a table and writes JSON after every run.

    python tools/bench_latency.py --only demo  [--threads 1 | 0] [--json bench/latency_demo.json]
    python tools/bench_latency.py --only suite [--epochs 2] [--json bench/latency_suite.json]
"""
import argparse
import json
import os
import sys
import tempfile
import time

import onnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.path.join(ROOT, "onnxoto", "data")
MODELS = {"resnet": os.path.join(DATA, "fmnist_resnet.onnx"), "vgg": os.path.join(ROOT, "models", "fmnist_vgg.onnx")}
TRAIN, TEST = os.path.join(DATA, "fmnist_train.npz"), os.path.join(DATA, "fmnist_test.npz")

from onnxoto import graph, groups  # noqa: E402
from onnxoto.latency import LatencyTable, machine, measure_table, measured_ratio  # noqa: E402
from onnxoto.prune import PruneOptions, prune  # noqa: E402
from onnxoto.report.measure import profile_pair  # noqa: E402
from onnxoto.report.table import format_table  # noqa: E402

DEMO = dict(loss="ce+distill", lr=0.02, batch_size=64, optimizer="hesso")  # `onnxoto demo`'s settings


def table_for(name, args):
    """The model's latency table at batch 64 and `--threads`, measured once and kept beside the JSON."""
    suffix = "" if args.threads == 1 else f"_threads{args.threads}" if args.threads else "_default_threads"
    path = os.path.join(os.path.dirname(os.path.abspath(args.json)), f"latency_table_{name}{suffix}.json")
    if not os.path.exists(path):
        analysis = groups.analyze(graph.load(MODELS[name], strict=True))
        started = time.perf_counter()
        table = measure_table(analysis, batch=64, threads=args.threads, rounds=args.rounds, log=print)
        table.machine["profile_minutes"] = (time.perf_counter() - started) / 60
        table.save(path)
    return path


def one(name, kind, target, epochs, round_to, args, work):
    table = table_for(name, args)
    out = os.path.join(work, f"{name}-{kind}{target}-{round_to}.onnx")
    targets = dict(target_latency=target) if kind == "latency" else dict(target_flops=round(1 - target, 3))
    options = PruneOptions(**DEMO, epochs=epochs, round_to=round_to, latency_table=table, **targets)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    result = prune(MODELS[name], TRAIN, out, val=TEST, options=options, log=print)
    minutes = (time.perf_counter() - started) / 60
    dense = graph.load(MODELS[name], strict=True)
    loaded = LatencyTable.load(table)
    measured = [measured_ratio(dense, onnx.load(out), loaded) for _ in range(5)]  # five times: the spread
    d, p = profile_pair([MODELS[name], out], batch=64, repeats=40)
    return {"model": name, "kind": kind, "target": target, "epochs": epochs, "round_to": result.settings["round_to"],
            "accuracy_dense": result.dense["metric"], "accuracy": result.pruned["metric"],
            "flops_kept": result.pruned["flops"] / result.dense["flops"],
            "params_kept": result.pruned["params"] / result.dense["params"],
            "latency_threads": loaded.threads, "latency_b64": sorted(measured)[2], "latency_b64_runs": measured,
            "latency_predicted": result.latency.get("predicted"),
            "default_threads": {k: p["latency_ms"][k] / d["latency_ms"][k] for k in ("batch1", "batchN")},
            "widths": {g["id"]: [g["kept"], g["channels"]] for g in result.groups},
            "verified": result.verified, "max_rel_diff": result.max_rel_diff, "minutes": minutes,
            "load_average": [load_before, os.getloadavg()[0]]}


def plan(args):
    if args.only == "demo":
        runs = [("resnet", "latency", 0.5, 8, 1), ("resnet", "latency", 0.5, 8, "auto"), ("resnet", "flops", 0.5, 8, "auto")]
        return [r for r in runs if r[1] in args.kinds]
    runs = []
    for target in args.targets:
        runs += [(name, "latency", target, args.epochs, 1) for name in args.models]
        runs += [(name, "flops", target, args.epochs, 8) for name in args.models]
    return [r for r in runs if r[1] in args.kinds]


def kept_rows(args):
    """--keep-flops: the FLOPs-targeted rows of an earlier run (the latency selection does not touch them)."""
    if not args.keep_flops or not os.path.exists(args.json):
        return []
    with open(args.json) as f:
        return [r for r in json.load(f)["rows"] if r["kind"] == "flops"]


def print_rows(rows):
    headers = ["model", "target", "round-to", "epochs", "latency b64 (threads)", "predicted", "FLOPs kept",
               "speed-up / ideal", "b1 / b64 (default threads)", "accuracy", "verified", "min"]
    table = [[r["model"], f"{r['kind']} {r['target']}", r["round_to"], r["epochs"],
              f"{r['latency_b64']:.3f} ({r['latency_threads'] or 'default'})",
              f"{r['latency_predicted']:.3f}" if r["latency_predicted"] is not None else "-", f"{r['flops_kept']:.3f}",
              f"{100 * r['flops_kept'] / r['latency_b64']:.0f}%",
              f"{r['default_threads']['batch1']:.2f} / {r['default_threads']['batchN']:.2f}",
              f"{100 * r['accuracy_dense']:.1f}% -> {100 * r['accuracy']:.1f}%", "yes" if r["verified"] else "NO",
              f"{r['minutes']:.1f}"] for r in rows]
    print(format_table(headers, table))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["demo", "suite"], required=True)
    ap.add_argument("--epochs", type=int, default=2, help="suite: epochs of every run (the demo runs 8)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads of the latency table and checks "
                    "(0: onnxruntime's default, timed by wall clock: on an idle machine only)")
    ap.add_argument("--rounds", type=int, default=40, help="timed runs per width in the latency tables")
    ap.add_argument("--models", nargs="+", default=["vgg", "resnet"], choices=sorted(MODELS), help="suite: models")
    ap.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.3, 0.7], help="suite: targets")
    ap.add_argument("--kinds", nargs="+", default=["latency", "flops"], choices=["latency", "flops"],
                    help="which kinds of target to run")
    ap.add_argument("--tables-only", action="store_true", help="measure the missing latency tables and stop")
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep-flops", action="store_true", help="reuse the FLOPs-targeted rows already in --json")
    args = ap.parse_args()
    args.threads = args.threads or None
    args.json = args.json or os.path.join(ROOT, "bench", f"latency_{args.only}.json")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    if args.tables_only:
        for name in args.models:
            table_for(name, args)
        return
    rows = kept_rows(args)
    done = {(r["model"], r["kind"], r["target"]) for r in rows}
    with tempfile.TemporaryDirectory(prefix="onnxoto-latency-") as work:
        for run in plan(args):
            if run[:3] in done:
                continue
            rows.append(one(*run, args, work))
            with open(args.json, "w") as f:
                json.dump({"date": time.strftime("%Y-%m-%d"), "machine": machine(), "threads": args.threads,
                           "rows": rows}, f, indent=1)
            print_rows(rows)


if __name__ == "__main__":
    main()
