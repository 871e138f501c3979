"""Every cut of the demo ResNet on the block grid (widths multiples of 16, and 8 for the two
16-wide groups) whose FLOPs lie in a range, timed round-robin against the dense model in one run
(one thread, batch 64, 10th percentiles of the thread's CPU time): how close to the ideal speed-up widths alone can come.

    python tools/latency_grid.py [--flops 0.46 0.52] [--rounds 15] [--json bench/latency_grid_demo.json]
"""
import argparse
import itertools
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from onnxoto import graph, groups  # noqa: E402
from onnxoto.graph import session  # noqa: E402
from onnxoto.latency.timing import clock_for, interleaved_ms  # noqa: E402
from onnxoto.surgery import cut  # noqa: E402
from onnxoto.verify import random_inputs  # noqa: E402
from tools.profile_ops import DEMO, keep_for  # noqa: E402

CHOICES = {"stem.0.weight:0": [8, 16], "blocks.0.conv1.weight:0": [8, 16], "blocks.1.conv1.weight:0": [16, 32],
           "blocks.1.conv2.weight:0": [16, 32], "blocks.2.conv1.weight:0": [16, 32],
           "blocks.3.conv1.weight:0": [16, 32, 48, 64], "blocks.3.conv2.weight:0": [16, 32, 48, 64]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flops", nargs=2, type=float, default=[0.46, 0.52])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "latency_grid_demo.json"))
    args = ap.parse_args()
    model = graph.load(DEMO, strict=True)
    analysis = groups.analyze(model)
    cuts = []
    for widths in itertools.product(*CHOICES.values()):
        keep = keep_for(analysis, dict(zip(CHOICES, widths)))
        flops = analysis.predict_cost(keep)[1] / analysis.flops
        if args.flops[0] <= flops <= args.flops[1]:
            cuts.append((flops, widths, keep))
    feeds = random_inputs(model, np.random.default_rng(0), batch=64)
    sessions = [session(model.proto, threads=args.threads)]
    sessions += [session(cut(model, analysis.groups, keep), threads=args.threads) for _, _, keep in cuts]
    times = interleaved_ms(sessions, feeds, rounds=args.rounds, quantile=10, clock=clock_for(args.threads))
    rows = sorted(({"widths": dict(zip(CHOICES, w)), "flops_kept": f, "latency": t / times[0],
                    "of_ideal": f / (t / times[0])} for (f, w, _), t in zip(cuts, times[1:])),
                  key=lambda r: -r["of_ideal"])
    for r in rows[:12]:
        print(f"latency {r['latency']:.3f}  FLOPs {r['flops_kept']:.3f}  {100 * r['of_ideal']:.0f}% of ideal  "
              f"{list(r['widths'].values())}")
    with open(args.json, "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average": os.getloadavg(),
                   "threads": args.threads, "clock": clock_for(args.threads), "rounds": args.rounds, "dense_ms": times[0], "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
