"""Latency of several sessions timed together: round-robin, one run of each per round. On a shared
machine a burst of load then falls on all of them alike, so their ratios stay stable; the lower
quartile of each session's times is what is kept (load only ever adds time: on this project's
shared 2 cores, four copies of one model agreed within 1% by it, within 13% by the median)."""
import time

import numpy as np


def interleaved_ms(sessions, feeds, rounds=20, warmup=2, quantile=25):
    """Lower-quartile (or `quantile`) wall time (ms) of one run of each session on the same `feeds`."""
    for sess in sessions:
        for _ in range(warmup):
            sess.run(None, feeds)
    times = [[] for _ in sessions]
    for _ in range(rounds):
        for k, sess in enumerate(sessions):
            start = time.perf_counter()
            sess.run(None, feeds)
            times[k].append((time.perf_counter() - start) * 1000)
    return [float(np.percentile(t, quantile)) for t in times]
