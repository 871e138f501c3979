"""DHSPG (OTOv2): the least salient ZIGs get a group-lasso push toward zero with an adaptive strength,
and a half-space projection sets a ZIG to exactly zero once its step would carry it past the origin."""
import numpy as np

from .hesso import Hesso

HALF_SPACE_EPSILON = 0.0  # OTOv2's epsilon: zero a ZIG when <x_new, x> <= eps * ||x||^2


class Dhspg(Hesso):
    """Same schedule and selection as HESSO (partition into candidate-redundant and important ZIGs by
    saliency). Each step a candidate x (before the step; x' after the base step) moves to
    x' - lam * x/||x||, the group-lasso subgradient at x. lam is adaptive per ZIG: the least push that
    keeps x's radial coordinate on a linear path to zero by the period's end (zero when the gradient
    already shrinks it fast enough; larger when the gradient resists, so nothing stalls). The half-space
    projection then zeroes every candidate whose new value left the half-space <., x> > eps ||x||^2,
    so nothing overshoots through the origin; what remains at the period's last step is zeroed."""

    def _project(self, position):
        self._hold_zero()
        if position is None:
            return
        length, into = self.schedule.period_length, position[1]
        remaining = length - into
        xp = self.xp
        for k in range(len(self.groups)):
            if not self.fading[k].any():
                continue
            zigs = xp.asarray(np.flatnonzero(self.fading[k]))
            new = self.index.gather(self.params, k, zigs)  # x' = x + step, shape (zigs, m)
            old = new - self.index.gather(self.directions, k, zigs)  # x: directions hold the step taken
            norm = xp.sqrt(xp.sum(old * old, axis=1, keepdims=True))
            unit = old / xp.maximum(norm, 1e-30)
            radial = xp.sum(new * unit, axis=1, keepdims=True)  # <x', x/||x||>
            lam = xp.maximum(radial - norm * (remaining - 1) / remaining, 0.0)  # the adaptive lambda
            pushed = new - lam * unit
            crossed = xp.sum(pushed * old, axis=1) <= HALF_SPACE_EPSILON * norm[:, 0] ** 2
            pushed[crossed] = 0  # half-space projection (also catches ZIGs that are already zero)
            if remaining == 1:
                pushed[...] = 0  # the period ends: every candidate is exactly zero, the target is met
            self.index.scatter(self.params, k, zigs, pushed)
        if remaining == 1:
            self.fading = [np.zeros_like(f) for f in self.fading]
            self._refresh_elements()

