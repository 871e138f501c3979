"""DHSPG (OTOv2): the least salient ZIGs get a group-lasso push toward zero with an adaptive strength,
and a half-space projection sets a ZIG to exactly zero once the step would carry it past the origin."""
import numpy as np

from .hesso import Hesso

HALF_SPACE_EPSILON = 0.0


class Dhspg(Hesso):
    """Same schedule and selection as HESSO; the candidates move by x <- x - lam * x/||x|| each step,
    lam chosen so the norm reaches zero by the period's end (the adaptive lambda: no stalling), and
    x is projected to zero when <x_new, x_period_start> <= eps * ||x_period_start||^2 (no overshoot)."""

    def _start_period(self, period):
        super()._start_period(period)
        self._anchor = {k: self.index.gather(self.params, k).copy() for k in range(len(self.groups))
                        if self.fading[k].any()}

    def _project(self, position):
        for name, flat in self._zero.items():
            self.params[name].reshape(-1)[flat] = 0
        if position is None:
            return
        length, into = self.schedule.period_length, position[1]
        xp = self.xp
        for k, anchor in getattr(self, "_anchor", {}).items():
            zigs = xp.asarray(np.flatnonzero(self.fading[k]))
            x = self.index.gather(self.params, k)[zigs]
            norm = xp.sqrt(xp.sum(x * x, axis=1, keepdims=True))
            lam = norm / (length - into)  # the push that reaches zero by the period's end
            pushed = x - lam * x / xp.maximum(norm, 1e-12)
            start = anchor[zigs]
            crossed = xp.sum(pushed * start, axis=1) <= HALF_SPACE_EPSILON * xp.sum(start * start, axis=1)
            pushed[crossed] = 0
            if into == length - 1:
                pushed[...] = 0
            self._scatter(k, zigs, pushed)
        if into == length - 1:
            self.fading = [np.zeros_like(f) for f in self.fading]
            self._anchor = {}
            self._refresh_elements()

    def _scatter(self, k, zigs, values):
        start = 0
        for name, flat in self.index.per_group[k][1]:
            width = flat.shape[1]
            self.params[name].reshape(-1)[flat[zigs].reshape(-1)] = values[:, start:start + width].reshape(-1)
            start += width
