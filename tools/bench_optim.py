"""Benchmark: the cost of one HESSO step, against a plain SGD step and inside a real training step.

    python tools/bench_optim.py [--sizes 1e5,1e6,1e7,1e8] [--repeats 15] [--json FILE] [--no-train]

1. Synthetic: conv-like parameters (L layers of (c, c, 3, 3) weights plus per-channel scale and bias,
   one ZIG group per layer, ZIG = output channel: rows of the weight and entries of scale/bias), numpy.
   Three HESSO states, all with SGD (momentum 0.9) as the base direction, 50% of the ZIGs marked:
     fade   - inside a pruning period: the marked ZIGs shrink by the fade factor every step
     held   - after the pruning phase: the marked ZIGs are held at exactly zero every step
     select - a period's first step (saliency + global ranking + marking; once per period)
   each timed as the median of --repeats steps and divided by the median of plain SGD steps
   (onnxoto.optim.SGD.update over the same buffers), timed interleaved in the same run.
2. Real: the bundled Fashion-MNIST ResNet in onnxruntime-training (onnxoto.train.TrainingSession, set up
   as `onnxoto prune` does), batch 64: median time of session.train_step alone and of
   train_step + opt.step(session.grads), interleaved; the optimizer's share = (both - alone) / both.
"""
import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from onnxoto.optim import SGD, Hesso, ZigGroup, ZigSlice

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = 4


def synthetic(total, seed=0):
    """params, grads, groups: LAYERS conv-like layers of (c, c, 3, 3) + scale (c,) + bias (c,), ~total params."""
    c = max(4, int(round((total / (9 * LAYERS)) ** 0.5)))
    rng = np.random.default_rng(seed)
    params, grads, groups = {}, {}, []
    for k in range(LAYERS):
        names = (f"conv{k}.weight", f"bn{k}.scale", f"bn{k}.bias")
        for name, shape in zip(names, ((c, c, 3, 3), (c,), (c,))):
            params[name] = rng.standard_normal(shape, dtype=np.float32)
            grads[name] = rng.standard_normal(shape, dtype=np.float32) * 0.01
        rows = np.arange(c)[:, None]
        groups.append(ZigGroup(id=f"conv{k}:0", num_zigs=c, slices=[ZigSlice(n, 0, rows) for n in names],
                               flops_per_zig=9.0 * c, params_per_zig=9.0 * c + 2))
    return params, grads, groups


def _copy(arrays):
    return {k: v.copy() for k, v in arrays.items()}


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_size(total, repeats):
    params, grads, groups = synthetic(total)
    count = sum(p.size for p in params.values())
    sgd_params = _copy(params)
    sgd = SGD(lr=0.01, momentum=0.9)

    def sgd_step():
        for name, p in sgd_params.items():
            sgd.update(name, p, grads[name])

    huge = 10 ** 9
    # fade: one period from step 0 lasting `huge` steps; step 0 marks 50% and every later step fades them
    fade = Hesso(_copy(params), groups, SGD(lr=0.01, momentum=0.9), total_steps=huge, target_sparsity=0.5,
                 start_pruning_step=0, pruning_steps=huge, pruning_periods=1)
    select_s = _timed(lambda: fade.step(grads))  # the period's first step: saliency, ranking, marking
    # held: a one-step period at step 0 -> the marked ZIGs are zero from step 1 on and held there
    held = Hesso(_copy(params), groups, SGD(lr=0.01, momentum=0.9), total_steps=huge, target_sparsity=0.5,
                 start_pruning_step=0, pruning_steps=1, pruning_periods=1)
    held.step(grads)
    marked = sum(int(p.sum()) for p in fade.pruned) / sum(g.num_zigs for g in groups)
    times = {"sgd": [], "fade": [], "held": []}
    sgd_step()
    fade.step(grads)
    held.step(grads)  # warm: momentum buffers exist
    for _ in range(repeats):  # interleaved: the same load for all three
        times["sgd"].append(_timed(sgd_step))
        times["fade"].append(_timed(lambda: fade.step(grads)))
        times["held"].append(_timed(lambda: held.step(grads)))
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"params": int(count), "channels": groups[0].num_zigs, "layers": LAYERS, "marked": marked,
           "repeats": repeats, "sgd_ms": med["sgd"] * 1e3, "hesso_fade_ms": med["fade"] * 1e3,
           "hesso_held_ms": med["held"] * 1e3, "hesso_select_ms": select_s * 1e3,
           "fade_ratio": med["fade"] / med["sgd"], "held_ratio": med["held"] / med["sgd"],
           "select_ratio": select_s / med["sgd"]}
    del fade, held, params, grads, sgd_params
    gc.collect()
    return out


def bench_training(repeats, batch=64, optimizer="hesso", seed=0):
    """The optimizer's share of a real step on the bundled ResNet (set up like onnxoto.prune.run._train)."""
    from onnxoto import graph, groups as groups_mod
    from onnxoto.prune.zigs import in_training_layout, optimizer_groups
    from onnxoto.train import TrainingSession, load_data, loss_for, prepare_for_training, trainable_params
    from onnxoto.train.forms import to_trainable

    model_path = os.path.join(REPO, "onnxoto", "data", "fmnist_resnet.onnx")
    dense = graph.load(model_path, strict=True)
    analysis = groups_mod.analyze(dense)
    data = load_data(os.path.join(REPO, "onnxoto", "data", "fmnist_train.npz"), dense.proto)
    loss = loss_for(dense.proto, labels=data.labels)
    prepared, param_map = to_trainable(prepare_for_training(dense.proto))
    trainable = [n for n in trainable_params(dense.proto) if int(np.prod(dense.shapes[n])) > 1]
    zig_groups = in_training_layout(optimizer_groups(analysis, trainable, 8), param_map)
    batches = []
    for b in data.batches(batch, shuffle=True, rng=np.random.default_rng(seed)):
        if len(b["labels"]) == batch:
            batches.append(b)
        if len(batches) == 8:
            break
    results = {}
    with tempfile.TemporaryDirectory() as work, \
            TrainingSession(prepared, loss, workdir=os.path.join(work, "artifacts"),
                            requires_grad=param_map.training_params(trainable), model_name=dense.name) as session:
        names = session.input_names
        feeds = [({n: b[n] for n in names}, b["labels"]) for b in batches]
        huge = 10 ** 9
        opt = Hesso(session.params, zig_groups, SGD(lr=0.01, momentum=0.9), total_steps=huge,
                    target_sparsity=0.5, total_flops=analysis.flops, start_pruning_step=0, pruning_steps=huge,
                    pruning_periods=1)
        session.train_step(*feeds[0])
        t0 = time.perf_counter()
        opt.step(session.grads)  # the period's first step: select and mark 50% of the ZIGs (then fading)
        select_s = time.perf_counter() - t0
        alone, both, opt_only = [], [], []
        for k in range(3):  # warm-up
            session.train_step(*feeds[k % len(feeds)])
            opt.step(session.grads)
        for k in range(repeats):
            inputs, labels = feeds[k % len(feeds)]
            alone.append(_timed(lambda: session.train_step(inputs, labels)))
            t0 = time.perf_counter()
            session.train_step(inputs, labels)
            t1 = time.perf_counter()
            opt.step(session.grads)
            t2 = time.perf_counter()
            both.append(t2 - t0)
            opt_only.append(t2 - t1)
        a, b, o = (statistics.median(v) for v in (alone, both, opt_only))
        results = {"model": "onnxoto/data/fmnist_resnet.onnx", "batch": batch, "repeats": repeats,
                   "params": int(sum(p.size for p in session.params.values())), "zig_groups": len(opt.groups),
                   "state": "fading 50% of the ZIGs (inside a pruning period)",
                   "train_step_ms": a * 1e3, "train_step_plus_opt_ms": b * 1e3, "opt_step_ms": o * 1e3,
                   "select_step_ms": select_s * 1e3,
                   "share": (b - a) / b, "share_direct": o / b, "goal_share": 0.03}
    return results


ARRAYS_PER_PARAM = 14  # params x4 copies, grads, momentum x3, directions x2, snapshots and temporaries
STEP_BUDGET_S = 5.0  # one SGD step longer than this at the previous size: the next one is not worth it


def _too_big(total, rows):
    """Why `total` parameters should not be benchmarked here (memory, or time extrapolated), else None."""
    need = ARRAYS_PER_PARAM * 4 * total
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        free = None
    if free is not None and need > 0.8 * free:
        return f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
    if rows and rows[-1]["sgd_ms"] / 1e3 * total / rows[-1]["params"] > STEP_BUDGET_S:
        return f"an SGD step would take over {STEP_BUDGET_S:.0f} s"
    return None


def fmt_table(headers, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda r: "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def synthetic_table(rows):
    return fmt_table(["params", "SGD ms", "HESSO fade ms", "ratio", "HESSO held ms", "ratio",
                      "period start ms", "ratio"],
                     [[f"{r['params']:.2e}", f"{r['sgd_ms']:.3f}", f"{r['hesso_fade_ms']:.3f}",
                       f"{r['fade_ratio']:.2f}", f"{r['hesso_held_ms']:.3f}", f"{r['held_ratio']:.2f}",
                       f"{r['hesso_select_ms']:.1f}", f"{r['select_ratio']:.1f}"] for r in rows])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e5,1e6,1e7,1e8")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--train-repeats", type=int, default=40)
    ap.add_argument("--no-train", action="store_true", help="skip the real training-step measurement")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = []
    for size in args.sizes.split(","):
        total = int(float(size))
        reason = _too_big(total, rows)
        if reason:
            print(f"  {total:.0e} params skipped: {reason}", file=sys.stderr, flush=True)
            break
        repeats = args.repeats if total < 5e7 else max(5, args.repeats // 3)
        rows.append(bench_size(total, repeats))
        print(f"  {rows[-1]['params']:.2e} params done", file=sys.stderr, flush=True)
    print(synthetic_table(rows))
    print(f"(median of the repeats per size, HESSO and SGD timed interleaved in one run; numpy, "
          f"{os.cpu_count()} cores; 'period start' is a single timing)")
    out = {"synthetic": rows}
    if not args.no_train:
        t = bench_training(args.train_repeats)
        out["training"] = t
        print(f"\nreal step, {t['model']}, batch {t['batch']}: train_step {t['train_step_ms']:.2f} ms, "
              f"+ HESSO step {t['train_step_plus_opt_ms']:.2f} ms (optimizer alone {t['opt_step_ms']:.2f} ms): "
              f"share {100 * t['share']:.1f}% (direct {100 * t['share_direct']:.1f}%), goal <= 3% "
              f"(median of {t['repeats']}, interleaved)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
