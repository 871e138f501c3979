"""Where a prune run's time goes: seconds per phase (PruneResult.seconds, the report)."""
import time
from collections import defaultdict
from contextlib import contextmanager


class Clock:
    """Seconds spent in each named phase; a phase timed several times adds up."""

    def __init__(self):
        self.seconds = defaultdict(float)

    @contextmanager
    def phase(self, name):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start
