"""Latency of several sessions timed together: round-robin, one run of each per round. On a shared
machine a burst of load then falls on all of them alike, so their ratios stay stable; the lower
quartile of each session's times is what is kept (load only ever adds time: on this project's
shared 2 cores, four copies of one model agreed within 1% by it, within 13% by the median)."""
import time

import numpy as np

from .. import progress



def interleaved_ms(sessions, feeds, rounds=20, warmup=2, quantile=25, desc="time sessions"):
    """Lower-quartile (or `quantile`) wall time (ms) of one run of each session on the same `feeds` (or a
    list of feeds, one per session: a cut that changed the inputs' sizes); a bar named `desc` counts the rounds."""
    feeds = feeds if isinstance(feeds, list) else [feeds] * len(sessions)
    for sess, feed in zip(sessions, feeds):
        for _ in range(warmup):
            sess.run(None, feed)
    times = [[] for _ in sessions]
    for _ in progress.bar(range(rounds), desc=desc, unit="round"):
        for k, sess in enumerate(sessions):
            start = time.perf_counter()
            sess.run(None, feeds[k])
            times[k].append((time.perf_counter() - start) * 1000)
    return [float(np.percentile(t, quantile)) for t in times]
