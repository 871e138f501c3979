"""HESSO: train with the base direction; at each pruning period's start mark the least salient ZIGs,
fade them linearly to exactly zero by the period's end, and hold them at zero from then on."""

import numpy as np

from ..errors import OptionError
from .backend import array_module, to_numpy
from .groups import ZigIndex, merge_bands
from .saliency import CRITERIA, saliency
from .schedule import default_schedule
from .select import search_latency_budget, select, select_latency
from .snapshot import restore_into, save_into

# global: one ranking of raw saliencies (HESSO's), so a layer whose weights are small can be emptied first;
# group: each ZIG's saliency relative to its group's mean, so every layer keeps its best channels (the
# default: ahead on the demo, README)
SCOPES = ("global", "group")
DEFAULT_SALIENCY_SCOPE = "group"


class Hesso:
    def __init__(self, params, groups, base, total_steps, target_sparsity=0.5, target_flops=None,
                 start_pruning_step=None, pruning_steps=None, pruning_periods=None, saliency_weights=None,
                 total_flops=None, erase_fraction=0.0, flops_fn=None, saliency_scope=DEFAULT_SALIENCY_SCOPE,
                 target_latency=None, latency=None, latency_fn=None):
        if target_latency is not None:  # keep at most this fraction of the dense latency, by `latency`'s table
            if latency is None or not 0 < target_latency < 1:
                raise OptionError(f"target latency must be in (0, 1) with a latency table, got {target_latency}")
            target_sparsity = target_flops = None
        elif target_flops is None and (target_sparsity is None or not 0 < target_sparsity < 1):
            raise OptionError(f"target sparsity must be in (0, 1), got {target_sparsity}")
        if target_flops is not None and not 0 < target_flops < 1:
            raise OptionError(f"target FLOPs fraction must be in (0, 1), got {target_flops}")
        self.params, self.base = params, base
        self.all_groups = list(groups)  # keep_masks answers for every group, pruned or not
        self.groups = [g for g in groups if g.num_zigs > 1 or g.erasable]
        self.erase_fraction = erase_fraction
        if saliency_scope not in SCOPES:
            raise OptionError(f"saliency scope {saliency_scope!r}: expected one of {', '.join(SCOPES)}")
        self.saliency_scope = saliency_scope
        unknown = set(saliency_weights or {}) - set(CRITERIA)
        if unknown:
            raise OptionError(f"unknown saliency criteria {sorted(unknown)}; known: {', '.join(CRITERIA)}")
        self.xp = array_module(next(iter(params.values())))
        self.index = ZigIndex(self.groups, params, self.xp)
        self.schedule = default_schedule(total_steps, start_pruning_step, pruning_steps, pruning_periods)
        self.target_sparsity, self.target_flops = target_sparsity, target_flops
        # latency_fn([keep masks, ...]) -> latency of each cut as a fraction of the dense one, timed together:
        # where the table was measured on this machine, each period's selection is searched against it
        self.target_latency, self.latency, self.latency_fn = target_latency, latency, latency_fn
        self._latency_scale = 1.0  # measured budget / the table's, learned period by period
        self._latency_measured = None  # the measured latency ratio of the last period's choice
        self.total_flops = total_flops or sum(g.flops_per_zig * g.num_zigs for g in self.groups if not g.erasable)
        # flops_fn(keep masks) -> FLOPs left, exactly (the caller's cost model): per-ZIG FLOPs are marginal
        # estimates that overstate what many removals together save (a layer's FLOPs shrink with both
        # its input and its output widths), so the budget is corrected against it
        self.flops_fn = flops_fn
        self.weights = saliency_weights
        self.t = 0
        self.pruned = [np.zeros(g.num_zigs, bool) for g in self.groups]  # marked: fading or zero
        self.fading = [np.zeros(g.num_zigs, bool) for g in self.groups]  # marked in the current period
        self.directions = {name: self.xp.zeros_like(p) for name, p in params.items()}
        self._inside = self._channels_inside_units()
        self._saved = None
        self._refresh_elements()

    # --- the step -------------------------------------------------------------------------
    def step(self, grads):
        """One step in place on the params: base direction for all, then the pruning projection."""
        for name, param in self.params.items():
            self.base.update(name, param, grads[name], out=self.directions[name])
        position = self.schedule.position(self.t)
        if position is not None and position[1] == 0:
            self._start_period(position[0])
        self._project(position)
        self.t += 1

    def _start_period(self, period):
        """Mark the ZIGs this period fades: everything faded before is zero by now."""
        new = self._select(period, self.scores())
        self.fading = new
        self.pruned = [p | n for p, n in zip(self.pruned, new)]
        self._refresh_elements()

    def _select(self, period, scores):
        """Erasable branches against their own budget first; the channels inside an erased branch go
        with it (out of the ranking, counted as removed); then channels against the sparsity/FLOPs budget."""
        new = [np.zeros(g.num_zigs, bool) for g in self.groups]
        units = [g.erasable for g in self.groups]
        if any(units) and self.erase_fraction:
            count = int(round(self.erase_fraction * sum(units) * (period + 1) / self.schedule.periods))
            chosen = select(*self._subset(units, scores), count, [float(u) for u in units])
            new = [c if u else n for u, n, c in zip(units, new, chosen)]
            for k, inside in self._inside.items():
                if (self.pruned[k] | new[k]).all():
                    for j, mask in inside.items():
                        new[j] |= mask & ~self.pruned[j]
        channels = [not g.erasable and g.prunable and g.target is None for g in self.groups]
        marked = [p | n for p, n in zip(self.pruned, new)]
        chosen = self._select_channels(period, self._subset(channels, scores, marked))
        new = [n | c for n, c in zip(new, chosen)]
        share = (period + 1) / self.schedule.periods
        for target in sorted({g.target for g in self.groups if g.target is not None and not g.erasable}):
            which = [not g.erasable and g.prunable and g.target == target for g in self.groups]
            total = sum(g.num_zigs for g, w in zip(self.groups, which) if w)
            marked = [p | n for p, n in zip(self.pruned, new)]
            chosen = select(*self._subset(which, scores, marked), int(round(target * total * share)),
                            [float(w) for w in which], int(round(target * total)))
            new = [n | c for n, c in zip(new, chosen)]
        return new

    def _channels_inside_units(self):
        """{unit group k: {channel group j: bool per ZIG}}: the channel ZIGs whose producer elements all
        lie in what erasable branch k zeroes."""
        inside = {}
        for k, unit in enumerate(self.groups):
            if not unit.erasable:
                continue
            zeroed = {}  # param -> bool array of its shape: the elements the branch zeroes
            for s in unit.slices:
                shape = tuple(self.params[s.param].shape)
                mask = zeroed.setdefault(s.param, np.zeros(shape, bool))
                index = [slice(None)] * len(shape)
                index[s.axis % len(shape)] = np.asarray(s.index).ravel()
                mask[tuple(index)] = True
            for j, g in enumerate(self.groups):
                if g.erasable or not g.slices or any(s.param not in zeroed for s in g.slices):
                    continue
                covered = np.ones(g.num_zigs, bool)
                for s in g.slices:
                    mask = zeroed[s.param]
                    axis = s.axis % mask.ndim
                    taken = np.take(mask, np.asarray(s.index).ravel(), axis=axis)  # ZIG-major along axis
                    taken = np.moveaxis(taken, axis, 0).reshape(g.num_zigs, -1)
                    covered &= taken.all(axis=1)
                if covered.any():
                    inside.setdefault(k, {})[j] = covered
        return inside

    def _select_channels(self, period, subset):
        if self.target_latency is not None:
            return self._select_for_latency(period, subset)
        budget, cost = self._budget(period)
        limit = self._budget(self.schedule.periods - 1)[0]
        new = select(*subset, budget, cost, limit)
        if self.target_flops is None or self.flops_fn is None:
            return new
        goal = self.target_flops * (period + 1) / self.schedule.periods
        for _ in range(8):  # raise the estimated budget until the exact FLOPs removed reach the goal
            keep = {g.id: ~(p | n) for g, p, n in zip(self.groups, subset[2], new)}
            removed = 1.0 - self.flops_fn(keep) / self.total_flops
            if removed >= goal or removed <= 0:
                break
            factor = min(2.0, goal / removed)
            budget, limit = budget * factor, limit * factor
            new = select(*subset, budget, cost, limit)
        return new

    def _select_for_latency(self, period, subset):
        """The period's share of the latency saving, by the table, with the run's whole saving as the
        knapsack's limit (a step larger than one period's share is taken early rather than never); with
        a measured latency_fn (the table is this machine's), each period's choice is timed and its
        budget searched until the cut lands at its goal (select.search_latency_budget). What the table's
        sum over- or under-promises, measured on the pick, scales the next period's budget."""
        share = (period + 1) / self.schedule.periods
        goal = 1.0 - share * (1.0 - self.target_latency)
        budget = self.latency.additive_for(goal) * self._latency_scale
        limit = self.latency.additive_for(self.target_latency) * self._latency_scale
        savings = [self.latency.savings(g.id) for g in self.groups]
        choose = lambda b: select_latency(*subset, b, savings, max(limit, b))  # noqa: E731
        if self.latency_fn is None:
            return choose(budget)
        final = period == self.schedule.periods - 1
        if self._latency_measured is not None and self._latency_measured <= goal:
            return choose(0.0)  # an earlier period's step reached this one's goal already: nothing more yet

        def keeps(new):
            return {g.id: ~(p | n) for g, p, n in zip(self.groups, subset[2], new)}

        new, self._latency_measured, _ = search_latency_budget(
            choose, lambda news: self.latency_fn([keeps(n) for n in news]), goal, budget, final,
            tries=6 if final else 4)
        spent = self.latency.additive({gid: int(k.sum()) for gid, k in keeps(new).items()})
        if spent > 0 and self._latency_measured < 0.97:  # the table's sum the measured cut took, over what it
            # says that cut takes (a saving within the timing's noise of none says nothing)
            promised = self.latency.additive_for(self._latency_measured)
            self._latency_scale = float(np.clip(spent / max(promised, 1e-12), 0.25, 4.0))
        return new

    def _subset(self, which, scores, pruned=None):
        """(groups, scores, pruned) restricted to `which`, others presented as unprunable."""
        groups = [g if w else _Frozen(g) for g, w in zip(self.groups, which)]
        return groups, scores, self.pruned if pruned is None else pruned

    def scores(self):
        scores = saliency(self.index, self.params, self.directions, self.weights)
        if self.saliency_scope == "group":  # each channel against its own layer's mean: pruning spreads out
            scores = [s / s.mean() if not g.erasable and s.size and s.mean() > 0 else s
                      for g, s in zip(self.groups, scores)]
        return scores

    def _budget(self, period):
        """(budget, cost per ZIG or None) over channel groups, reached cumulatively by the end of `period`."""
        share = (period + 1) / self.schedule.periods
        own = [g.erasable or g.target is not None for g in self.groups]  # outside this budget
        channels = [g for g, o in zip(self.groups, own) if not o]
        if self.target_flops is not None:
            return self.target_flops * self.total_flops * share, [0.0 if o else g.flops_per_zig
                                                                  for g, o in zip(self.groups, own)]
        total = sum(g.num_zigs for g in channels)
        return int(round(self.target_sparsity * total * share)), [0.0 if o else 1.0 for o in own]

    def _project(self, position):
        """Fading ZIGs shrink by (D-t-1)/(D-t) (zero at the period's end); earlier ones stay zero."""
        self._hold_zero()
        if position is None:
            return
        length, into = self.schedule.period_length, position[1]
        factor = (length - into - 1) / (length - into)
        for band in self._fade:
            band.scale(self.params[band.name], factor)
        if into == length - 1:  # the period ends: its ZIGs join the zero set
            self.fading = [np.zeros_like(f) for f in self.fading]
            self._refresh_elements()

    def _hold_zero(self):
        """The base step moved the zero ZIGs (their gradient is not ours to change): back to exactly 0."""
        for band in self._zero:
            band.fill(self.params[band.name], 0)

    def _refresh_elements(self, forget=True):
        """Bands per parameter axis: the elements held at zero, those fading. Newly zero elements
        lose their base-optimizer state (momentum), so nothing pushes them back."""
        self._zero = self._elements([p & ~f for p, f in zip(self.pruned, self.fading)])
        self._fade = self._elements(self.fading)
        if forget:
            for band in self._zero:
                self.base.forget(band.name, band)

    def _elements(self, masks):
        """[Band] covering the ZIGs set in `masks` (one bool array per group), one per parameter axis."""
        pairs = []
        for k, mask in enumerate(masks):
            if mask.any():
                pairs += self.index.bands(k, self.xp.asarray(np.flatnonzero(mask)))
        return merge_bands(pairs, self.xp)

    # --- what the caller reads ------------------------------------------------------------
    def keep_masks(self):
        """Group id -> bool (num_zigs,), False = pruned, for every group given (unoptimized ones all True)."""
        masks = {g.id: np.ones(g.num_zigs, bool) for g in self.all_groups}
        masks.update({g.id: ~p for g, p in zip(self.groups, self.pruned)})
        return masks

    def metrics(self):
        """Step, phase, group sparsity (zero ZIGs / all), ZIGs zero and fading, L2 norms of kept and fading
        ZIGs; computed once per step (one read of the grouped parameters) however often it is asked for."""
        cached = getattr(self, "_metrics", None)
        if cached is not None and cached["step"] == self.t:
            return dict(cached)
        total = sum(g.num_zigs for g in self.groups)
        fading = int(sum(f.sum() for f in self.fading))
        zero = int(sum(p.sum() for p in self.pruned)) - fading
        kept_sq = fade_sq = 0.0
        for k in range(len(self.groups)):
            norms = to_numpy(self.index.square_norms(self.params, k))
            kept_sq += float(norms[~self.pruned[k]].sum())
            fade_sq += float(norms[self.fading[k]].sum())
        self._metrics = {"step": self.t, "phase": self.schedule.phase(self.t),
                         "group_sparsity": zero / total if total else 0.0, "zigs_zero": zero, "zigs_fading": fading,
                         "norm_kept": kept_sq ** 0.5, "norm_fading": fade_sq ** 0.5}
        if self._latency_measured is not None:
            self._metrics["latency_measured"] = self._latency_measured
        return dict(self._metrics)

    # --- resume and snapshots ----------------------------------------------------------------
    def state_dict(self):
        state = {"t": self.t, "latency_scale": self._latency_scale}
        for g, p, f in zip(self.groups, self.pruned, self.fading):
            state[f"pruned/{g.id}"] = p.astype(np.uint8)
            state[f"fading/{g.id}"] = f.astype(np.uint8)
        for key, value in self.base.state().items():
            state[f"base/{key}"] = to_numpy(value) if not isinstance(value, int) else value
        return state

    def load_state_dict(self, state):
        self.t = int(state["t"])
        self._latency_scale = float(state.get("latency_scale", 1.0))
        self.pruned = [np.asarray(state[f"pruned/{g.id}"], bool) for g in self.groups]
        self.fading = [np.asarray(state[f"fading/{g.id}"], bool) for g in self.groups]
        self.base.load_state({k[5:]: (self.xp.asarray(v) if getattr(v, "ndim", 0) else v)
                              for k, v in state.items() if k.startswith("base/")})
        self._metrics = None
        self._refresh_elements(forget=False)

    def snapshot(self):
        """Copy every parameter, direction and optimizer state into buffers kept from the last snapshot."""
        saved = self._saved or {"params": {}, "directions": {}, "base": {}}
        save_into(saved["params"], self.params)
        save_into(saved["directions"], self.directions)
        save_into(saved["base"], self.base.state())
        saved["marks"] = ([p.copy() for p in self.pruned], [f.copy() for f in self.fading], self.t)
        self._saved = saved

    def restore(self):
        """Write the last snapshot back in place: the caller's buffers stay the same objects."""
        if self._saved is None:
            raise RuntimeError("restore() without snapshot()")
        restore_into(self.params, self._saved["params"])
        restore_into(self.directions, self._saved["directions"])
        self.base.load_state(restore_into(self.base.state(), self._saved["base"]))
        pruned, fading, self.t = self._saved["marks"]
        self.pruned, self.fading = [p.copy() for p in pruned], [f.copy() for f in fading]
        self._metrics = None
        self._refresh_elements(forget=False)


class _Frozen:
    """A group shown to the selector as not prunable (outside the budget being spent)."""

    def __init__(self, group):
        self.__dict__.update(group.__dict__)
        self.prunable, self.erasable = False, False
