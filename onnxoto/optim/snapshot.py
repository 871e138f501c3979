"""In-place snapshots of parameters and optimizer state: the copies are allocated once and reused."""


def save_into(saved, arrays):
    """Copy every array (or number) of `arrays` into `saved`, reusing its buffers where shapes match."""
    for name in [k for k in saved if k not in arrays]:
        del saved[name]
    for name, value in arrays.items():
        kept = saved.get(name)
        if not hasattr(value, "shape"):
            saved[name] = value
        elif kept is not None and getattr(kept, "shape", None) == value.shape and kept.dtype == value.dtype:
            kept[...] = value
        else:
            saved[name] = value.copy()
    return saved


def restore_into(arrays, saved):
    """Write `saved` back into the arrays of `arrays` in place; returns the name -> value dict to use
    (entries created since the snapshot are dropped, entries gone since are recreated as copies)."""
    out = {}
    for name, value in saved.items():
        current = arrays.get(name)
        if hasattr(value, "shape") and current is not None and getattr(current, "shape", None) == value.shape:
            current[...] = value
            out[name] = current
        else:
            out[name] = value.copy() if hasattr(value, "copy") else value
    return out
