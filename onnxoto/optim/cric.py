"""HESSO-CRIC: before committing a period's candidates, correct them with cycles of simulated pruning
and each group's measured loss sensitivity."""
import numpy as np

from ..errors import OptionError
from .hesso import Hesso

SENSITIVITY_FRACTIONS = (0.25, 0.5, 0.75)


class HessoCric(Hesso):
    """HESSO whose period-start selection is corrected by loss measurements (forward passes of loss_fn).

    Each cycle zeroes the candidates (on top of what is already pruned), re-scores, and measures for
    every group how much of that simulated loss its own candidates account for (the loss falls when
    they alone come back): candidates that matter once the others are gone are raised, and the ZIGs
    that are weakest without them take their place. Cycles stop when the candidate set repeats."""

    def __init__(self, params, groups, base, total_steps, loss_fn=None, cric_cycles=3, sensitivity_weight=0.5,
                 cycle_weight=0.5, **kwargs):
        if loss_fn is None:
            raise OptionError("HESSO-CRIC needs loss_fn: the loss on a fixed batch, forward only")
        if cric_cycles < 0:
            raise OptionError(f"cric_cycles must be >= 0, got {cric_cycles}")
        super().__init__(params, groups, base, total_steps, **kwargs)
        self.loss_fn, self.cycles = loss_fn, cric_cycles
        self.sensitivity_weight, self.cycle_weight = sensitivity_weight, cycle_weight
        self.cycles_run = []  # cycles used per period, for reports and tests

    def _start_period(self, period):
        self.snapshot()  # the cycles' reference values; restored bit-identically at the end
        scores = self.scores()
        sensitivity = self.sensitivity(scores)
        history, need = [scores], [np.zeros(g.num_zigs) for g in self.groups]
        candidates = self._select(period, self._corrected(history, sensitivity, need))
        used = 0
        for used in range(1, self.cycles + 1):
            undo = self._zero_zigs([p | c for p, c in zip(self.pruned, candidates)])  # simulate the pruning
            rescored = self.scores()  # the others, ranked once the candidates are gone; a zeroed candidate
            history.append([np.where(c, h, r) for c, h, r in zip(candidates, history[-1], rescored)])  # keeps its own
            self._measure_need(candidates, need)
            self._undo(undo)
            again = self._select(period, self._corrected(history, sensitivity, need))
            if all(np.array_equal(a, c) for a, c in zip(again, candidates)):
                break
            candidates = again
        self.cycles_run.append(used)
        self.restore()
        self.fading = candidates
        self.pruned = [p | c for p, c in zip(self.pruned, candidates)]
        self._refresh_elements()

    def _measure_need(self, candidates, need):
        """With the candidates zeroed: per group, the share of the loss that bringing back its own
        candidates removes, (L - L_with_them_back) / L in [0, 1], split evenly over those candidates
        (one forward pass per group, not per ZIG); each ZIG keeps its largest share over the cycles."""
        pruned_loss = max(self.loss_fn(), 1e-12)
        saved = self._saved["params"]
        for k, chosen in enumerate(candidates):
            if not chosen.any():
                continue
            mask = [np.zeros_like(c) for c in candidates]
            mask[k] = chosen
            bands = self._elements(mask)
            for band in bands:
                band.put(self.params[band.name], band.take(saved[band.name]))
            share = max(0.0, (pruned_loss - self.loss_fn()) / pruned_loss)
            for band in bands:
                band.fill(self.params[band.name], 0)
            need[k][chosen] = np.maximum(need[k][chosen], share / chosen.sum())

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

    def _corrected(self, history, sensitivity, need):
        """Saliency averaged over the cycles, raised for groups whose loss is sensitive to pruning and
        for candidates the cycles found needed; both bonuses in units of the typical saliency."""
        mean = [np.mean([h[k] for h in history], axis=0) for k in range(len(self.groups))]
        typical = float(np.mean(np.concatenate(mean))) if mean else 0.0
        scale = np.abs(sensitivity).max() or 1.0
        return [m + typical * (self.sensitivity_weight * s / scale + self.cycle_weight * n)
                for m, s, n in zip(mean, sensitivity, need)]

    def _zero_zigs(self, masks):
        """Zero the ZIGs in `masks`; returns what `_undo` needs to put their values back."""
        undo = []
        for band in self._elements(masks):
            param = self.params[band.name]
            undo.append((band, param, band.take(param)))  # fancy indexing gathers a copy
            band.fill(param, 0)
        return undo

    @staticmethod
    def _undo(undo):
        for band, param, values in reversed(undo):
            band.put(param, values)
