"""Measure a latency table on this machine: each prunable group cut alone to each width of
`table_widths`, timed round-robin against the dense model; then uniform joint cuts for the
correction. Needs onnx and onnxruntime (inference) only, so it runs on the deployment device."""
import os
import platform
import statistics

import numpy as np
import onnxruntime as ort

from ..errors import ModelError
from ..graph import session
from ..groups import keep_all
from ..surgery import cut
from ..verify import random_inputs
from .table import LatencyTable
from .timing import clock_for, interleaved_ms
from .widths import table_widths

CALIBRATION = (0.85, 0.7, 0.55, 0.4, 0.25)  # kept fractions of every group for the joint cuts
ROUNDS = 20
# the ratio of a cut: the 10th percentile of each model's times. Contention on a shared machine adds time
# to every run alike and pulls ratios toward 1 (a half-width ResNet: 0.59 at the lower quartile, 0.44 at
# the 10th percentile, in the same runs); the runs it spared are closer to the serving machine's
RATIO_QUANTILE = 10


def measure_table(analysis, batch=64, threads=None, provider="CPUExecutionProvider", rounds=ROUNDS, seed=0,
                  log=lambda line: None):
    """The LatencyTable of a groups.Analysis at `batch` with these session options."""
    model = analysis.model
    feeds = random_inputs(model, np.random.default_rng(seed), batch=batch)
    make = lambda proto: session(proto, threads=threads, provider=provider)  # noqa: E731
    dense = make(model.proto)
    groups, dense_ms = {}, []
    todo = [g for g in analysis.prunable if g.num_zigs > 1]
    if not todo:
        raise ModelError(f"{model.name}: no prunable group to time (run `onnxoto analyze` to see why)")
    for k, g in enumerate(todo):
        widths = table_widths(g.num_zigs)
        keeps = [_keep(analysis, {g.id: w}) for w in widths]
        times = interleaved_ms([dense] + [make(cut(model, analysis.groups, keep)) for keep in keeps], feeds, rounds,
                               desc=f"profile group {k + 1}/{len(todo)}", clock=clock_for(threads))
        dense_ms.append(times[0])
        groups[g.id] = {"channels": g.num_zigs, "widths": widths, "ratio": [t / times[0] for t in times[1:]],
                        "flops_ratio": [analysis.predict_cost(keep)[1] / analysis.flops for keep in keeps]}
        log(f"latency table: group {k + 1}/{len(todo)} {g.id} ({g.num_zigs} channels, {len(widths)} widths)")
    table = LatencyTable(batch=_rows(feeds), threads=threads, provider=provider,
                         dense_ms=statistics.median(dense_ms) if dense_ms else 0.0, groups=groups, machine=machine())
    table.calibration = _calibrate(analysis, table, make, dense, feeds, rounds)
    return table


def _calibrate(analysis, table, make, dense, feeds, rounds):
    """Uniform joint cuts: (additive saving the table predicts, saving measured)."""
    plans = [{gid: _fastest_near(e, fraction) for gid, e in table.groups.items()} for fraction in CALIBRATION]
    if not plans or not table.groups:
        return []
    sessions = [make(cut(analysis.model, analysis.groups, _keep(analysis, w))) for w in plans]
    times = interleaved_ms([dense] + sessions, feeds, rounds, desc="profile joint cuts",
                           clock=clock_for(table.threads))
    return [{"additive": table.additive(w), "measured": 1.0 - t / times[0], "kept_fraction": f}
            for w, t, f in zip(plans, times[1:], CALIBRATION)]


def _keep(analysis, widths):
    """Keep masks with each group of `widths` cut to its first `width` channels, the rest whole."""
    keep = keep_all(analysis.prunable)
    for gid, width in widths.items():
        keep[gid] = np.arange(len(keep[gid])) < width
    return keep


def _fastest_near(entry, fraction, spread=0.1):
    """The width within `spread` of `fraction` of the group that the table shows fastest, as the
    selection would prefer it; the nearest one when none is that close."""
    n = entry["channels"]
    near = [(r, w) for w, r in zip(entry["widths"], entry["ratio"]) if abs(w / n - fraction) <= spread]
    if near:
        return min(near)[1]
    return min(entry["widths"], key=lambda w: abs(w - fraction * n))


def _rows(feeds):
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def machine():
    """Where the table was measured: enough to tell two machines apart in a report."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), cpu)
        flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
        simd = "avx512f" if " avx512f" in flags else "avx2" if " avx2" in flags else ""
    except OSError:
        simd = ""
    return {"cpu": cpu, "simd": simd, "cores": os.cpu_count(), "onnxruntime": ort.__version__,
            "platform": platform.platform()}


def measured_ratio(model, pruned_proto, table, rounds=3 * ROUNDS, seed=1):
    """Latency of the cut model over the dense one (a graph.Model), timed together on this machine
    with the table's batch and session options."""
    return measured_ratios(model, [pruned_proto], table, rounds, seed)[0]


def measured_ratios(model, pruned_protos, table, rounds=3 * ROUNDS, seed=1):
    """Latency of each cut model over the dense one, all timed round-robin in one run, so that the
    ratios of candidates can be compared with each other (a burst of load falls on all alike)."""
    feeds = random_inputs(model, np.random.default_rng(seed), batch=table.batch)
    sessions = [session(p, threads=table.threads, provider=table.provider) for p in [model.proto, *pruned_protos]]
    times = interleaved_ms(sessions, feeds, rounds, quantile=RATIO_QUANTILE, clock=clock_for(table.threads))
    return [t / times[0] for t in times[1:]]


def same_machine(described):
    """Whether a table's `machine` is this one (CPU, cores, onnxruntime): then a cut can be measured
    where the table was."""
    here = machine()
    return all(described.get(k) == here[k] for k in ("cpu", "simd", "cores", "onnxruntime"))
