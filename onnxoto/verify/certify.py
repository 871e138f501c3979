"""The certificate of DESIGN.md §5: zeroing a group's ZIGs and cutting them give the same outputs."""
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from ..errors import ModelError
from ..surgery import cut, zero_out
from .inputs import random_inputs

ort.set_default_logger_severity(3)  # onnxruntime's optimizer warnings are noise to our users
TOLERANCE = 1e-4  # max abs difference, relative to the output's scale (max abs of M0's output)


@dataclass
class Check:
    group: str
    removed: int  # ZIGs cut in this check
    rel_diff: float
    error: str = ""

    @property
    def passed(self):
        return not self.error and self.rel_diff <= TOLERANCE


@dataclass
class Certificate:
    groups_total: int
    groups_prunable: int
    checks: list = field(default_factory=list)

    @property
    def failures(self):
        return [c for c in self.checks if not c.passed]

    @property
    def groups_verified(self):
        failed = {c.group for c in self.failures}
        return len({c.group for c in self.checks} - failed)

    @property
    def max_rel_diff(self):
        return max((c.rel_diff for c in self.checks if not c.error), default=0.0)

    @property
    def passed(self):
        return not self.failures

    def to_json(self):
        return {"groups_total": self.groups_total, "groups_prunable": self.groups_prunable,
                "groups_verified": self.groups_verified, "max_rel_diff": self.max_rel_diff,
                "tolerance": TOLERANCE,
                "failures": [{"group": c.group, "removed": c.removed, "rel_diff": c.rel_diff, "error": c.error}
                             for c in self.failures]}


def run(proto, feeds):
    """Outputs of a ModelProto on the CPU, in graph output order."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def relative_difference(reference, candidate):
    """Max over outputs of max|a - b| / max|a| (absolute when the reference is all zero)."""
    worst = 0.0
    for a, b in zip(reference, candidate):
        if a.shape != b.shape:
            return float("inf")
        a, b = a.astype(np.float64), b.astype(np.float64)
        scale = float(np.max(np.abs(a))) if a.size else 0.0
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        if not np.isfinite(diff):
            return float("inf")
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def subset_sizes(num_zigs, subsets):
    """Sizes spread from one ZIG to all but one."""
    if num_zigs < 2:
        return []
    return sorted({int(round(s)) for s in np.linspace(1, num_zigs - 1, subsets)})


def check_group(model, groups, group, removed, feeds):
    keep = {group.id: np.ones(group.num_zigs, bool)}
    keep[group.id][removed] = False
    try:
        zeroed = run(zero_out(model, groups, keep), feeds)
        pruned = run(cut(model, groups, keep), feeds)
    except ModelError as exc:
        return Check(group.id, len(removed), float("inf"), str(exc))
    except Exception as exc:  # onnxruntime refusing the cut model is a failed check, reported as such
        return Check(group.id, len(removed), float("inf"), f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return Check(group.id, len(removed), relative_difference(zeroed, pruned))


def certify(analysis, subsets=3, seed=0):
    """Check every prunable group on `subsets` random ZIG subsets; returns a Certificate."""
    model = analysis.model
    rng = np.random.default_rng(seed)
    feeds = random_inputs(model, rng)
    try:
        run(model.proto, feeds)
    except Exception as exc:
        shapes = {k: v.shape for k, v in feeds.items()}
        raise ModelError(f"{model.name}: the model itself does not run on inputs {shapes} "
                         f"({str(exc).splitlines()[0][:160]})") from None
    cert = Certificate(len(analysis.groups), len(analysis.prunable))
    for group in analysis.prunable:
        for size in subset_sizes(group.num_zigs, subsets):
            removed = rng.choice(group.num_zigs, size=size, replace=False)
            cert.checks.append(check_group(model, analysis.groups, group, removed, feeds))
    return cert
