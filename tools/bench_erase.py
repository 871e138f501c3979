"""Erasing whole branches (OTOv3) on real data: the bundled Fashion-MNIST ResNet pruned with HESSO at one
channel sparsity and several `--erase` fractions; accuracy on the bundled test set, params and FLOPs kept,
the branches erased, CPU latency of the pruned model against the dense one (medians, timed in one run).
Prints a table and writes JSON.

    python tools/bench_erase.py [--epochs 4] [--sparsity 0.3] [--erase 0 0.25 0.5] [--json bench/erase.json]
"""
import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.path.join(ROOT, "onnxoto", "data")

from onnxoto.prune import PruneOptions, prune  # noqa: E402
from onnxoto.report.table import format_table  # noqa: E402


def one(erase, args, work):
    out = os.path.join(work, f"erase{erase}.onnx")
    options = PruneOptions(target_sparsity=args.sparsity, epochs=args.epochs, batch_size=64, round_to=8,
                           erase=erase, seed=0)
    started = time.perf_counter()
    result = prune(os.path.join(DATA, "fmnist_resnet.onnx"), os.path.join(DATA, "fmnist_train.npz"), out,
                   val=os.path.join(DATA, "fmnist_test.npz"), options=options, log=lambda line: None)
    latency = {k: result.pruned["latency_ms"][k] / result.dense["latency_ms"][k] for k in ("batch1", "batchN")}
    return {"erase": erase, "accuracy_dense": result.dense["metric"], "accuracy": result.pruned["metric"],
            "params_kept": result.pruned["params"] / result.dense["params"],
            "flops_kept": result.pruned["flops"] / result.dense["flops"], "latency_ratio": latency,
            "group_sparsity": result.group_sparsity, "verified": result.verified,
            "erased": [{"id": u["id"], "nodes": len(u["nodes"]), "flops_share": u["flops_share"]} for u in result.erased],
            "minutes": (time.perf_counter() - started) / 60}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--sparsity", type=float, default=0.3)
    ap.add_argument("--erase", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "erase.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="onnxoto-erase-") as work:
        rows = [one(erase, args, work) for erase in args.erase]
    headers = ["--erase", "erased", "acc dense", "acc pruned", "params kept", "FLOPs kept", "latency b1",
               "latency b64", "group sparsity", "verified", "min"]
    table = [[r["erase"], ", ".join(f"{u['id']} ({100 * u['flops_share']:.1f}%)" for u in r["erased"]) or "-",
              f"{100 * r['accuracy_dense']:.1f}%", f"{100 * r['accuracy']:.1f}%", f"{r['params_kept']:.2f}",
              f"{r['flops_kept']:.2f}", f"{r['latency_ratio']['batch1']:.2f}", f"{r['latency_ratio']['batchN']:.2f}",
              f"{r['group_sparsity']:.2f}", "yes" if r["verified"] else "NO", f"{r['minutes']:.1f}"] for r in rows]
    print(format_table(headers, table))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"epochs": args.epochs, "sparsity": args.sparsity, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
