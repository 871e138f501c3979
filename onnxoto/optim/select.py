"""Which ZIGs to prune: one global ranking by saliency, in blocks that keep each group's width one its
`round_to` allows, never a whole group."""
import numpy as np


def allowed_widths(n, round_to, narrow=True):
    """Kept counts below n a group may shrink to, widest first: multiples of `round_to`, and under it
    (when `narrow`) multiples of half of it. onnxruntime's blocked (NCHWc) convolutions take input
    widths that are a multiple of their block (8 with AVX2, 16 with AVX-512) or narrower than one
    block; a Conv's output narrower than the block is still computed a whole block wide and reordered,
    which is what `narrow=False` (--round-to auto, where the table shows it) avoids."""
    return [w for w in range(n - 1, 0, -1) if width_allowed(w, round_to, narrow)]


def width_allowed(width, round_to, narrow=True):
    """A multiple of `round_to`, or below it (when `narrow`) a multiple of half of it."""
    div = max(1, round_to)
    half = max(1, div // 2)
    return width % div == 0 or (narrow and width < div and width % half == 0)


def blocks(group, score, pruned):
    """(mean score, ZIG indices) of the group's next prunable blocks, least salient first: each block
    takes the kept count down to the next allowed width; the narrowest allowed width always stays."""
    if group.erasable:
        return [] if pruned.all() else [(float(score[0]), np.array([0]))]
    if not group.prunable:
        return []
    live = np.flatnonzero(~pruned)
    order = live[np.argsort(score[live], kind="stable")]
    out, start = [], 0
    for width in allowed_widths(len(live), group.round_to, group.narrow):
        block = order[start:len(live) - width]
        out.append((float(np.mean(score[block])), block))
        start = len(live) - width
    return out


def select(groups, scores, pruned, budget, cost=None, limit=None):
    """New ZIGs to prune so the pruned total reaches `budget` (a ZIG count, or cost units when `cost`
    gives each group's cost per ZIG). Returns per group a bool array of newly selected ZIGs.

    `limit` (default `budget`): what the whole run will spend. A wide block may overshoot `budget` but
    not overshoot `limit` by more than it helps: a block larger than one period's share of the
    budget is taken early rather than never."""
    limit = budget if limit is None else limit
    unit = [1.0] * len(groups) if cost is None else list(cost)
    spent = sum(float(p.sum()) * u for p, u in zip(pruned, unit))
    candidates = [(mean, k, block) for k, g in enumerate(groups) for mean, block in blocks(g, scores[k], pruned[k])]
    candidates.sort(key=lambda c: c[0])
    new = [np.zeros(g.num_zigs, bool) for g in groups]
    joins = {g.join for g, p in zip(groups, pruned) if g.erasable and p.all()}
    passed_over = set()  # a group's blocks go in order: after one is passed over, a later one would
    for _, k, block in candidates:  # leave a width no block boundary allows, and not the least salient ZIGs
        if spent >= budget:
            break
        if k in passed_over:
            continue
        if groups[k].erasable:
            if groups[k].join in joins:
                continue  # the other input of this join is already gone
            joins.add(groups[k].join)
        price = len(block) * unit[k]
        if price == 0:
            continue  # outside this budget
        if len(block) > 1 and spent + price - limit > limit - spent:
            passed_over.add(k)  # a wide block that would overshoot the run's budget more than it helps
            continue
        new[k][block] = True
        spent += price
    return new


def latency_steps(group, score, pruned, savings):
    """(saliency per saving, saving, ZIG indices) of a group's next width changes, least salient per
    saved latency first: the steps of the upper concave hull of saving against saliency removed,
    over the measured widths below the current one. A width that saves no more than a wider one
    (off the runtime's fast steps) lies under the hull and is never a step's end."""
    live = np.flatnonzero(~pruned)
    order = live[np.argsort(score[live], kind="stable")]
    n = len(live)
    # the cost of a width: 1/s - 1, s the share of the group's saliency it keeps. A share, so emptying a
    # narrow layer costs as much as emptying a wide one; growing as the layer narrows (16 -> 8 costs 1,
    # 8 -> 4 costs 2, ..., 16 -> 1 costs 15), so a layer is not thinned to a bottleneck of a channel or
    # two (the demo's blocks.0.conv1 16 -> 1) because each of its channels is cheap in latency
    # Pruned channels' saliency is gone with their weights: the group's whole is the live channels'
    # at their mean, and each width's cost counts from the current one's.
    live_total = max(float(score[live].sum()), 1e-12)
    whole = live_total * group.num_zigs / n
    kept = live_total - np.concatenate([[0.0], np.cumsum(score[order])])
    removed = whole / np.maximum(kept, 1e-9 * whole) - group.num_zigs / n
    base = savings.get(n, 0.0)
    points = [(float(removed[n - w]), savings[w] - base, w) for w in sorted(savings, reverse=True) if 0 < w < n
              and width_allowed(w, group.round_to, group.narrow)]
    steps, cost, saved, width = [], 0.0, 0.0, n
    while True:
        ahead = [((s - saved) / max(c - cost, 1e-12), c, s, w) for c, s, w in points if w < width and s > saved]
        if not ahead:
            return steps
        slope, c, s, w = max(ahead, key=lambda a: a[0])  # ties: the wider width, listed first
        steps.append((1.0 / slope, s - saved, order[n - width:n - w]))
        cost, saved, width = c, s, w


def select_latency(groups, scores, pruned, budget, savings, limit=None):
    """New ZIGs to prune so the groups' summed latency savings (fractions of the dense latency,
    `savings[k]`: {width: saving} or None) reach `budget`: the knapsack over widths taken greedily
    by saliency per saved latency, as HALP does. Returns per group a bool array.

    `limit` (default `budget`): what the whole run will spend, as in `select`: a step that saves more
    than one period's share (a narrow early layer to its fast width) may overshoot `budget`, and is
    passed over only when it would overshoot `limit` by more than it helps; else it would never fit."""
    limit = budget if limit is None else max(limit, budget)
    new = [np.zeros(g.num_zigs, bool) for g in groups]
    spent, candidates = 0.0, []
    for k, g in enumerate(groups):
        if savings[k] is None or not g.prunable or g.erasable:
            continue
        spent += savings[k].get(int((~pruned[k]).sum()), 0.0)
        candidates += [(key, saving, k, block) for key, saving, block in latency_steps(g, scores[k], pruned[k],
                                                                                        savings[k])]
    candidates.sort(key=lambda c: c[0])
    passed_over = set()
    for _, saving, k, block in candidates:
        if spent >= budget:
            break
        if k in passed_over:
            continue
        if spent + saving - limit > limit - spent:
            passed_over.add(k)  # overshoots the run's budget more than it helps; a later group's step may fit
            continue
        new[k][block] = True
        spent += saving
    return new


def search_latency_budget(choose, measure, goal, budget, final, tolerance=0.03, tries=6):
    """Closed loop on the budget: `choose(budget)` gives a selection, `measure([selections])` their
    latencies as fractions of the dense one (timed together). The budget is corrected (a secant
    between the closest budgets on either side of `goal`, else a step by the saving still missing)
    until a measured cut lands in the period's band; the closest candidates are then timed again side
    by side, in one round-robin (the last period twice: its choice is the run's). The last period
    (`final`) aims within `tolerance` of `goal` and takes the one nearest it, not above it by more
    than the tolerance; an earlier one aims at or just above its goal (up to the tolerance) and takes
    the nearest that does not cut below it, since a period's overshoot cannot be undone later while a
    shortfall is made up by the next; where every candidate cuts below, the least cut. Returns
    (selection, measured, budget)."""
    low, high = (goal * (1 - tolerance), goal * (1 + tolerance)) if final else (goal, goal * (1 + tolerance))
    tried = {}  # the selection's bytes -> [budget, selection, [measured, ...]]
    slow = fast = None  # (budget, measured): the largest budget still above goal, the smallest below
    for _ in range(tries):
        new = choose(budget)
        key = b"".join(np.packbits(n).tobytes() for n in new)
        if key not in tried:
            tried[key] = [budget, new, [measure([new])[0]]]
        measured = tried[key][2][0]
        if low <= measured <= high:
            break
        if measured > goal and (slow is None or budget > slow[0]):
            slow = (budget, measured)
        elif measured < goal and (fast is None or budget < fast[0]):
            fast = (budget, measured)
        if slow and fast:
            if fast[0] - slow[0] <= 1e-4 * max(fast[0], 1e-12):
                break  # no budget between them changes the cut
            step = (slow[1] - goal) / max(slow[1] - fast[1], 1e-12)
            budget = slow[0] + float(np.clip(step, 0.15, 0.85)) * (fast[0] - slow[0])
        else:
            budget *= float(np.clip((1.0 - goal) / max(1.0 - measured, 0.02), 0.5, 2.0))
            if budget <= 0:
                break
    candidates = sorted(tried.values(), key=lambda t: abs(t[2][0] - goal))[:3]
    if len(candidates) > 1:
        for _ in range(2 if final else 1):
            for entry, measured in zip(candidates, measure([c[1] for c in candidates])):
                entry[2].append(measured)
    for entry in candidates:
        entry[2] = float(np.mean(entry[2]))  # every timing of it: less noise
    fit = [c for c in candidates if (c[2] <= high if final else c[2] >= low)]
    pick = min(fit, key=lambda c: abs(c[2] - goal)) if fit else (
        min(candidates, key=lambda c: c[2]) if final else max(candidates, key=lambda c: c[2]))
    return pick[1], pick[2], pick[0]
