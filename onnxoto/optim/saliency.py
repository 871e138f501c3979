"""Saliency of every ZIG: a weighted sum of five criteria, each normalized by its global L2 norm."""
import numpy as np

from .backend import array_module, to_numpy

CRITERIA = ("magnitude", "avg_magnitude", "cosine", "taylor1", "taylor2")
DEFAULT_WEIGHTS = dict.fromkeys(CRITERIA, 0.2)


def criteria(x, d, xp):
    """x, d: (num_zigs, m) parameters and descent direction of each ZIG; returns name -> (num_zigs,)."""
    norm_x = xp.sqrt(xp.sum(x * x, axis=1))
    norm_d = xp.sqrt(xp.sum(d * d, axis=1))
    dot = xp.sum(x * d, axis=1)
    cosine = dot / xp.maximum(norm_x * norm_d, 1e-12)
    return {"magnitude": norm_x, "avg_magnitude": norm_x / x.shape[1], "cosine": cosine + 1.0,
            "taylor1": xp.abs(dot), "taylor2": 0.5 * dot * dot}


def saliency(index, params, directions, weights=None):
    """One numpy array per group: the saliency of its ZIGs (higher = more important)."""
    weights = weights or DEFAULT_WEIGHTS
    raw = []
    for k, (group, _) in enumerate(index.per_group):
        x, d = index.gather(params, k), index.gather(directions, k)
        xp = array_module(x)
        raw.append({name: to_numpy(v).astype(np.float64) for name, v in criteria(x, d, xp).items()})
    scores = [np.zeros(g.num_zigs) for g, _ in index.per_group]
    for name in CRITERIA:
        w = weights.get(name, 0.0)
        if not w:
            continue
        norm = np.sqrt(sum(float(np.sum(r[name] ** 2)) for r in raw)) or 1.0
        for score, r in zip(scores, raw):
            score += w * r[name] / norm
    return scores
