"""The latency table: what each prunable group saves of the dense model's latency at each measured
width (the group cut alone, the rest dense), and a correction for cutting many groups at once,
measured on uniform joint cuts. Savings are fractions of the dense latency: a table stays valid
when the whole machine is slower or faster, and ratios timed together are what noise spares."""
import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import OptionError
from ..optim import width_allowed

VERSION = 1
BLOCKS = (1, 2, 4, 8, 16, 32)  # the --round-to values `auto` chooses from
AUTO_SHARE = 0.9  # auto: the finest block whose widths are at least this efficient as the best block's


@dataclass
class LatencyTable:
    batch: int
    threads: int | None
    provider: str
    dense_ms: float
    groups: dict  # group id -> {"channels": n, "widths": [...], "ratio": [...], "flops_ratio": [...]}
    calibration: list = field(default_factory=list)  # [{"additive": A, "measured": M}], savings as fractions
    machine: dict = field(default_factory=dict)
    version: int = VERSION

    # --- what the selection reads -------------------------------------------------------------
    def savings(self, gid):
        """{width: fraction of the dense latency saved} of the group cut alone; None if not measured."""
        entry = self.groups.get(gid)
        if entry is None:
            return None
        out = {w: 1.0 - r for w, r in zip(entry["widths"], entry["ratio"])}
        out[entry["channels"]] = 0.0
        return out

    def additive(self, widths):
        """Sum of the groups' own savings at `widths` (group id -> kept count)."""
        total = 0.0
        for gid, width in widths.items():
            saving = self.savings(gid)
            if saving is not None:
                total += saving.get(width, 0.0)
        return total

    def joint_saving(self, additive):
        """The saving measured when groups with this additive saving are cut together: the
        calibration interpolated (a layer between two cut groups saves less than both alone say)."""
        points = sorted((c["additive"], c["measured"]) for c in self.calibration if c["additive"] > 0)
        if not points:
            return additive
        a = np.array([0.0] + [p[0] for p in points])
        m = np.maximum.accumulate(np.array([0.0] + [p[1] for p in points]))
        if additive <= a[-1]:
            return float(np.interp(additive, a, m))
        return float(additive * m[-1] / a[-1])  # beyond the last point: its ratio

    def predict(self, widths):
        """Predicted latency of the model cut to `widths`, as a fraction of the dense latency."""
        return 1.0 - self.joint_saving(self.additive(widths))

    def additive_for(self, keep_fraction):
        """The additive saving whose joint saving leaves `keep_fraction` of the dense latency."""
        goal, low, high = 1.0 - keep_fraction, 0.0, max(4.0, 4 * (1.0 - keep_fraction))
        for _ in range(60):
            mid = (low + high) / 2
            low, high = (mid, high) if self.joint_saving(mid) < goal else (low, mid)
        return high

    def auto_block(self):
        """--round-to auto: the finest block whose allowed widths save, per FLOP removed, at least
        AUTO_SHARE of what the most efficient block's widths save. Blocks wider than the narrowest
        group are not candidates: that group would have no width left to shrink to."""
        scores, narrowest = {}, min((e["channels"] for e in self.groups.values()), default=1)
        for block in (b for b in BLOCKS if b <= narrowest):
            score = self._efficiency(block, lambda w: True)
            if score is not None:
                scores[block] = score
        if not scores:
            return 1
        best = max(scores.values())
        return min(b for b, s in scores.items() if s >= AUTO_SHARE * best)

    def auto_rounding(self):
        """--round-to auto: (block, whether widths below it are allowed). Below the block onnxruntime
        computes a Conv's output a whole block wide and reorders it (the demo ResNet at 8 of 16 on
        AVX-512: its Conv no faster, a ReorderOutput more), so those widths are allowed only where
        the table shows them saving, per FLOP removed, AUTO_SHARE of what the block's multiples save."""
        block = self.auto_block()
        narrow = self._efficiency(block, lambda w: w < block)
        whole = self._efficiency(block, lambda w: w % block == 0)
        return block, narrow is None or whole is None or narrow >= AUTO_SHARE * whole

    def _efficiency(self, block, which):
        """Median latency saved per FLOP saved over the widths the block allows that `which` picks."""
        ratios = [s / f for s, f in self._efficiency_points(block, which) if f > 0]
        return float(np.median(ratios)) if ratios else None

    def _efficiency_points(self, block, which=lambda w: True):
        """(latency saved, FLOPs saved) of each measured width the block allows, every group."""
        for entry in self.groups.values():
            for w, r, f in zip(entry["widths"], entry["ratio"], entry["flops_ratio"]):
                if width_allowed(w, block) and which(w):
                    yield 1.0 - r, 1.0 - f

    def check_groups(self, group_channels, source):
        """The table must come from this model: every group it names, with the same channel count."""
        for gid, entry in self.groups.items():
            if gid not in group_channels:
                raise OptionError(f"{source}: group {gid!r} is not a prunable group of this model "
                                  "(was the table profiled on another model?)")
            if group_channels[gid] != entry["channels"]:
                raise OptionError(f"{source}: group {gid!r} has {entry['channels']} channels in the table, "
                                  f"{group_channels[gid]} in the model")

    # --- the file -----------------------------------------------------------------------------
    def save(self, path):
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(self), f, indent=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path):
        try:
            with open(path) as f:
                data = json.load(f)
        except OSError as exc:
            raise OptionError(f"--latency-table {path}: {exc.strerror}") from None
        except ValueError:
            raise OptionError(f"--latency-table {path}: not a JSON file") from None
        return cls.from_json(data, path)

    @classmethod
    def from_json(cls, data, source="latency table"):
        try:
            table = cls(**data)
            _check_shape(table)
        except (TypeError, KeyError, ValueError) as exc:
            raise OptionError(f"{source}: not a latency table written by `onnxoto profile` ({exc})") from None
        if table.version != VERSION:
            raise OptionError(f"{source}: table version {table.version}, expected {VERSION}")
        return table


def _check_shape(table):
    if not isinstance(table.groups, dict) or int(table.batch) < 1 or not float(table.dense_ms) > 0:
        raise ValueError("bad header")
    for gid, entry in table.groups.items():
        n, widths = int(entry["channels"]), [int(w) for w in entry["widths"]]
        if len(widths) != len(entry["ratio"]) or len(widths) != len(entry["flops_ratio"]):
            raise ValueError(f"group {gid}: lists of different lengths")
        if any(not 0 < w < n for w in widths):
            raise ValueError(f"group {gid}: a width outside 1..{n - 1}")
        entry["widths"], entry["ratio"] = widths, [float(r) for r in entry["ratio"]]
        entry["flops_ratio"] = [float(r) for r in entry["flops_ratio"]]
    for point in table.calibration:
        float(point["additive"]), float(point["measured"])
