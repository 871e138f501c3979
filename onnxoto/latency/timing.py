"""Latency of several sessions timed together: round-robin, one run of each per round. On a shared
machine a burst of load then falls on all of them alike, so their ratios stay stable; the lower
quartile of each session's times is what is kept (load only ever adds time: on this project's
shared 2 cores, four copies of one model agreed within 1% by it, within 13% by the median).

With one intra-op thread onnxruntime runs the graph in the calling thread, so its CPU time is the
run's own work, without the time the scheduler gave other processes: `clock="cpu"` times that (two
copies of one cut agreed within 0.4% where wall time agreed within 2%, at load 4–6 on 2 cores). With
more threads the CPU time sums the pool's threads (and their spinning), so wall time is kept there."""
import time

import numpy as np

from .. import progress

CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def interleaved_ms(sessions, feeds, rounds=20, warmup=2, quantile=25, desc="time sessions", clock="wall"):
    """Lower-quartile (or `quantile`) time (ms) of one run of each session on the same `feeds` (or a
    list of feeds, one per session: a cut that changed the inputs' sizes), by `clock` (CLOCKS); a bar
    named `desc` counts the rounds."""
    feeds = feeds if isinstance(feeds, list) else [feeds] * len(sessions)
    now = CLOCKS[clock]
    for sess, feed in zip(sessions, feeds):
        for _ in range(warmup):
            sess.run(None, feed)
    times = [[] for _ in sessions]
    for _ in progress.bar(range(rounds), desc=desc, unit="round"):
        for k, sess in enumerate(sessions):
            start = now()
            sess.run(None, feeds[k])
            times[k].append((now() - start) * 1000)
    return [float(np.percentile(t, quantile)) for t in times]


def clock_for(threads):
    """The clock that times a session with `threads` intra-op threads: its thread's CPU time with one."""
    return "cpu" if threads == 1 else "wall"
