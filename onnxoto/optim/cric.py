"""HESSO-CRIC: before committing a period's candidates, correct them with cycles of simulated pruning
and each group's measured loss sensitivity."""
import numpy as np

from ..errors import OptionError
from .hesso import Hesso

SENSITIVITY_FRACTIONS = (0.25, 0.5, 0.75)


class HessoCric(Hesso):
    def __init__(self, params, groups, base, total_steps, loss_fn=None, cric_cycles=3, sensitivity_weight=0.5,
                 **kwargs):
        if loss_fn is None:
            raise OptionError("HESSO-CRIC needs loss_fn: the loss on a fixed batch, forward only")
        super().__init__(params, groups, base, total_steps, **kwargs)
        self.loss_fn, self.cycles, self.sensitivity_weight = loss_fn, cric_cycles, sensitivity_weight
        self.cycles_run = []  # cycles used per period, for reports and tests

    def _start_period(self, period):
        self.snapshot()
        scores = self.scores()
        sensitivity = self.sensitivity(scores)
        history = [scores]
        candidates = self._select(period, self._corrected(history, sensitivity))
        used = 0
        for used in range(1, self.cycles + 1):
            undo = self._zero_zigs([p | c for p, c in zip(self.pruned, candidates)])  # simulate the pruning
            history.append(self.scores())
            self._undo(undo)
            again = self._select(period, self._corrected(history, sensitivity))
            if all(np.array_equal(a, c) for a, c in zip(again, candidates)):
                break
            candidates = again
        self.cycles_run.append(used)
        self.restore()  # bit-identical to before the cycles, whatever loss_fn touched
        self.fading = candidates
        self.pruned = [p | c for p, c in zip(self.pruned, candidates)]
        self._refresh_elements()

    def sensitivity(self, scores):
        """Per group: mean relative loss increase when its 25/50/75% least salient live ZIGs are zeroed."""
        before = max(self.loss_fn(), 1e-12)
        out = np.zeros(len(self.groups))
        for k, g in enumerate(self.groups):
            live = np.flatnonzero(~self.pruned[k])
            order = live[np.argsort(scores[k][live])]
            rises = []
            for fraction in SENSITIVITY_FRACTIONS:
                masks = [p.copy() for p in self.pruned]
                masks[k][order[:max(1, int(fraction * len(live)))]] = True
                undo = self._zero_zigs(masks)
                rises.append(self.loss_fn() / before - 1.0)
                self._undo(undo)  # only the zeroed elements go back: no full restore per evaluation
            out[k] = np.mean(rises)
        return out

    def _corrected(self, history, sensitivity):
        """Saliency averaged over the cycles, raised for groups whose loss is sensitive to pruning."""
        mean = [np.mean([h[k] for h in history], axis=0) for k in range(len(self.groups))]
        typical = float(np.mean(np.concatenate(mean))) if mean else 0.0
        scale = np.abs(sensitivity).max() or 1.0
        return [m + self.sensitivity_weight * typical * s / scale for m, s in zip(mean, sensitivity)]

    def _zero_zigs(self, masks):
        """Zero the ZIGs in `masks`; returns what `_undo` needs to put their values back."""
        undo = []
        for name, flat in self._elements(masks).items():
            view = self.params[name].reshape(-1)
            undo.append((view, flat, view[flat]))  # fancy indexing gathers a copy
            view[flat] = 0
        return undo

    @staticmethod
    def _undo(undo):
        for view, flat, values in reversed(undo):
            view[flat] = values
