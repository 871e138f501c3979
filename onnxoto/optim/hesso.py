"""HESSO: train with the base direction; at each pruning period's start mark the least salient ZIGs,
fade them linearly to exactly zero by the period's end, and hold them at zero from then on."""
import numpy as np

from ..errors import OptionError
from .backend import array_module, to_numpy
from .groups import FlatIndex
from .saliency import saliency
from .schedule import default_schedule
from .select import select


class Hesso:
    def __init__(self, params, groups, base, total_steps, target_sparsity=0.5, target_flops=None,
                 start_pruning_step=None, pruning_steps=None, pruning_periods=None, saliency_weights=None,
                 group_divisible=None, total_flops=None):
        if target_flops is None and (target_sparsity is None or not 0 < target_sparsity < 1):
            raise OptionError(f"target sparsity must be in (0, 1), got {target_sparsity}")
        if target_flops is not None and not 0 < target_flops < 1:
            raise OptionError(f"target FLOPs fraction must be in (0, 1), got {target_flops}")
        self.params, self.base = params, base
        self.groups = [g for g in groups if g.num_zigs > 1]
        if group_divisible:
            for g in self.groups:
                g.divisible = group_divisible
        self.xp = array_module(next(iter(params.values())))
        self.index = FlatIndex(self.groups, params, self.xp)
        self.schedule = default_schedule(total_steps, start_pruning_step, pruning_steps, pruning_periods)
        self.target_sparsity, self.target_flops = target_sparsity, target_flops
        self.total_flops = total_flops or sum(g.flops_per_zig * g.num_zigs for g in self.groups)
        self.weights = saliency_weights
        self.t = 0
        self.pruned = [np.zeros(g.num_zigs, bool) for g in self.groups]  # marked: fading or zero
        self.fading = [np.zeros(g.num_zigs, bool) for g in self.groups]  # marked in the current period
        self.directions = {name: self.xp.zeros_like(p) for name, p in params.items()}
        self._refresh_elements()

    # --- the step -------------------------------------------------------------------------
    def step(self, grads):
        """One step in place on the params: base direction for all, then the pruning projection."""
        for name, param in self.params.items():
            self.directions[name][...] = self.base.update(name, param, grads[name])
        position = self.schedule.position(self.t)
        if position is not None and position[1] == 0:
            self._start_period(position[0])
        self._project(position)
        self.t += 1

    def _start_period(self, period):
        """Mark the ZIGs this period fades: everything faded before is zero by now."""
        scores = self.scores()
        new = select(self.groups, scores, self.pruned, *self._budget(period))
        self.fading = new
        self.pruned = [p | n for p, n in zip(self.pruned, new)]
        self._refresh_elements()

    def scores(self):
        return saliency(self.index, self.params, self.directions, self.weights)

    def _budget(self, period):
        """(budget, cost per ZIG or None) reached cumulatively by the end of `period`."""
        share = (period + 1) / self.schedule.periods
        if self.target_flops is not None:
            return self.target_flops * self.total_flops * share, [g.flops_per_zig for g in self.groups]
        total = sum(g.num_zigs for g in self.groups)
        return int(round(self.target_sparsity * total * share)), None

    def _project(self, position):
        """Fading ZIGs shrink by (D-t-1)/(D-t) (zero at the period's end); earlier ones stay zero."""
        for name, flat in self._zero.items():
            self.params[name].reshape(-1)[flat] = 0
        if position is None:
            return
        length, into = self.schedule.period_length, position[1]
        factor = (length - into - 1) / (length - into)
        for name, flat in self._fade.items():
            view = self.params[name].reshape(-1)
            view[flat] = view[flat] * factor
        if into == length - 1:  # the period ends: its ZIGs join the zero set
            self.fading = [np.zeros_like(f) for f in self.fading]
            self._refresh_elements()

    def _refresh_elements(self, forget=True):
        """Flat element indices per parameter: those held at zero, those fading. Newly zero elements
        lose their base-optimizer state (momentum), so nothing pushes them back."""
        self._zero = self._elements([p & ~f for p, f in zip(self.pruned, self.fading)])
        self._fade = self._elements(self.fading)
        if forget:
            for name, flat in self._zero.items():
                self.base.forget(name, flat)

    def _elements(self, masks):
        parts = {}
        for k, mask in enumerate(masks):
            if mask.any():
                for name, flat in self.index.elements(k, self.xp.asarray(np.flatnonzero(mask))):
                    parts.setdefault(name, []).append(flat)
        return {name: self.xp.concatenate(p) for name, p in parts.items()}

    # --- what the caller reads ------------------------------------------------------------
    def keep_masks(self):
        return {g.id: ~p for g, p in zip(self.groups, self.pruned)}

    def metrics(self):
        total = sum(g.num_zigs for g in self.groups)
        fading = int(sum(f.sum() for f in self.fading))
        zero = int(sum(p.sum() for p in self.pruned)) - fading
        kept_sq = fade_sq = 0.0
        for k in range(len(self.groups)):
            norms = to_numpy(self.xp.sum(self.index.gather(self.params, k) ** 2, axis=1))
            kept_sq += float(norms[~self.pruned[k]].sum())
            fade_sq += float(norms[self.fading[k]].sum())
        return {"step": self.t, "phase": self.schedule.phase(self.t), "group_sparsity": zero / total if total else 0.0,
                "zigs_zero": zero, "zigs_fading": fading, "norm_kept": kept_sq ** 0.5, "norm_fading": fade_sq ** 0.5}

    # --- resume and snapshots ----------------------------------------------------------------
    def state_dict(self):
        state = {"t": self.t}
        for g, p, f in zip(self.groups, self.pruned, self.fading):
            state[f"pruned/{g.id}"] = p.astype(np.uint8)
            state[f"fading/{g.id}"] = f.astype(np.uint8)
        for key, value in self.base.state().items():
            state[f"base/{key}"] = to_numpy(value) if not isinstance(value, int) else value
        return state

    def load_state_dict(self, state):
        self.t = int(state["t"])
        self.pruned = [np.asarray(state[f"pruned/{g.id}"], bool) for g in self.groups]
        self.fading = [np.asarray(state[f"fading/{g.id}"], bool) for g in self.groups]
        self.base.load_state({k[5:]: (self.xp.asarray(v) if getattr(v, "ndim", 0) else v)
                              for k, v in state.items() if k.startswith("base/")})
        self._refresh_elements(forget=False)

    def snapshot(self):
        """In-place copies of every parameter and of the optimizer state."""
        self._saved = ({n: p.copy() for n, p in self.params.items()},
                       {k: (v.copy() if hasattr(v, "copy") else v) for k, v in self.base.state().items()},
                       {n: d.copy() for n, d in self.directions.items()},
                       [p.copy() for p in self.pruned], [f.copy() for f in self.fading], self.t)

    def restore(self):
        params, base, directions, pruned, fading, t = self._saved
        for name, saved in params.items():
            self.params[name][...] = saved
        for name, saved in directions.items():
            self.directions[name][...] = saved
        self.base.load_state({k: (v.copy() if hasattr(v, "copy") else v) for k, v in base.items()})
        self.pruned, self.fading, self.t = [p.copy() for p in pruned], [f.copy() for f in fading], t
        self._refresh_elements(forget=False)
