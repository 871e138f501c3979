"""Which ZIGs to prune: one global ranking by saliency, in blocks that keep each group's width a
multiple of its `divisible`, never a whole group."""
import numpy as np


def blocks(group, score, pruned):
    """(mean score, ZIG indices) of the group's next prunable blocks, least salient first.

    The first block trims the kept count to a multiple of `divisible`; later ones are `divisible`
    wide; at least max(divisible, 1) ZIGs always stay."""
    if group.erasable:
        return [] if pruned.all() else [(float(score[0]), np.array([0]))]
    div = max(1, group.divisible)
    live = np.flatnonzero(~pruned)
    order = live[np.argsort(score[live], kind="stable")]
    kept, start, size = len(live), 0, (len(live) % div) or div
    out = []
    while kept - size >= div and group.prunable:
        block = order[start:start + size]
        out.append((float(np.mean(score[block])), block))
        start, kept, size = start + size, kept - size, div
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
    for _, k, block in candidates:
        if spent >= budget:
            break
        if groups[k].erasable:
            if groups[k].join in joins:
                continue  # the other input of this join is already gone
            joins.add(groups[k].join)
        price = len(block) * unit[k]
        if price == 0:
            continue  # outside this budget
        if len(block) > 1 and spent + price - limit > limit - spent:
            continue  # a wide block that would overshoot the run's budget more than it helps
        new[k][block] = True
        spent += price
    return new
