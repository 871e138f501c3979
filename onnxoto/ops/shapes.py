"""Shape arithmetic the rules share with normalization."""
import numpy as np


def resolve_fresh_symbol(src, dst):
    """A dim inference could not name (a -1 or a run-time target) is the product it must be."""
    def solve(known, other):
        fresh = [k for k, d in enumerate(other) if isinstance(d, str) and d not in known]
        if len(fresh) != 1 or any(isinstance(d, str) and d not in other for d in known) or None in known:
            return other
        total = int(np.prod([d for d in known if isinstance(d, int)]))
        rest = int(np.prod([d for k, d in enumerate(other) if isinstance(d, int)]))
        if rest == 0 or total % rest:
            return other
        return tuple(total // rest if k == fresh[0] else d for k, d in enumerate(other))
    if src is None or dst is None or None in dst:
        return src, dst
    return src, solve(src, dst)
