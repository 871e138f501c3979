"""Which ZIGs to prune: one global ranking by saliency, in blocks that keep each group's width one its
`round_to` allows, never a whole group."""
import numpy as np


def allowed_widths(n, round_to):
    """Kept counts below n a group may shrink to, widest first: multiples of `round_to`, and under it
    multiples of half of it. onnxruntime's blocked (NCHWc) convolutions take input widths that are a
    multiple of their block (8 with AVX2, 16 with AVX-512) or narrower than one block."""
    div = max(1, round_to)
    half = max(1, div // 2)
    return [w for w in range(n - 1, 0, -1) if w % div == 0 or (w < div and w % half == 0)]


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
    for width in allowed_widths(len(live), group.round_to):
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
