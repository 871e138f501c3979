"""When HESSO prunes: warm-up, then `periods` periods of `steps // periods` steps each."""
from dataclasses import dataclass

from ..errors import OptionError

DEFAULT_PERIODS = 10


@dataclass(frozen=True)
class Schedule:
    start: int  # first step of the pruning phase
    steps: int  # length of the pruning phase
    periods: int

    @property
    def period_length(self):
        return self.steps // self.periods

    @property
    def end(self):
        return self.start + self.periods * self.period_length

    def position(self, step):
        """(period, steps into it) for a step inside the pruning phase, else None."""
        if not self.start <= step < self.end:
            return None
        return divmod(step - self.start, self.period_length)

    def phase(self, step):
        if step < self.start:
            return "warm-up"
        if step < self.end:
            return f"pruning {(step - self.start) // self.period_length + 1}/{self.periods}"
        return "fine-tune"


def default_schedule(total_steps, start=None, steps=None, periods=None):
    """Defaults from the run's length: start at ~10%, prune over the next ~30%, 10 periods; checked."""
    if total_steps < 1:
        raise OptionError("nothing to train: zero steps")
    if start is None:
        start = int(0.1 * total_steps)
    if steps is None:  # ~30% of the run, shortened when a late start leaves less
        steps = max(1, min(int(0.3 * total_steps), total_steps - start))
        if periods is not None:
            steps = max(steps, periods)
    if periods is None:
        periods = max(1, min(DEFAULT_PERIODS, steps))
    if periods < 1:
        raise OptionError("pruning_periods must be at least 1")
    if steps < periods:
        raise OptionError(f"pruning_steps ({steps}) < pruning_periods ({periods}): each period needs a step")
    if start < 0 or start + steps > total_steps:
        raise OptionError(f"pruning from step {start} for {steps} steps runs past the end of training "
                          f"({total_steps} steps): train longer or start earlier")
    return Schedule(start, steps, periods)
