"""The certificate of DESIGN.md §5: zeroing a group's ZIGs and cutting them give the same outputs."""
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import graph, groups as grouping, progress
from ..child import run_child, step
from ..errors import ModelError
from ..graph import producers, run, with_outputs
from ..groups import keep_all, removed_positions
from ..ops import attribute, spec_of
from ..surgery import cut, zero_out, zero_units
from .inputs import random_inputs

TOLERANCE = 1e-4  # max abs difference, relative to the output's scale (max abs of M0's output)
# onnxruntime computes bounded ops (OpSpec.bounded: sigmoid, tanh, softmax) with approximations good to
# ~1e-7 absolute: in a saturated tail (a sigmoid map whose max is 3e-6) that is a 3% relative error with
# nothing cut wrongly. Their values are compared on the scale of their range (1), and the arguments they
# read at the usual scale. Where the argument is large (logits of scale 100), float32 noise within its
# tolerance moves the value by up to the function's slope times as much (every bounded op's slope is at most
# 1, HardSigmoid's at most its alpha): the value's scale is then that of its argument (argument_floors).


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
    units_total: int = 0
    unit_checks: list = field(default_factory=list)  # one per erasable branch

    @property
    def failures(self):
        return [c for c in self.checks + self.unit_checks if not c.passed]

    @property
    def units_verified(self):
        return sum(c.passed for c in self.unit_checks)

    @property
    def groups_verified(self):
        failed = {c.group for c in self.checks if not c.passed}
        return len({c.group for c in self.checks} - failed)

    @property
    def max_rel_diff(self):
        return max((c.rel_diff for c in self.checks + self.unit_checks if not c.error), default=0.0)

    @property
    def passed(self):
        return not self.failures

    def to_json(self):
        return {"groups_total": self.groups_total, "groups_prunable": self.groups_prunable,
                "groups_verified": self.groups_verified, "max_rel_diff": self.max_rel_diff,
                "tolerance": TOLERANCE, "erasable_total": self.units_total, "erasable_verified": self.units_verified,
                "failures": [{"group": c.group, "removed": c.removed, "rel_diff": c.rel_diff, "error": c.error}
                             for c in self.failures]}


def relative_difference(reference, candidate, floors=None):
    """Max over outputs of max|a - b| / max(max|a|, floor) (absolute when that is zero)."""
    worst = 0.0
    floors = floors or [0.0] * len(reference)
    for a, b, floor in zip(reference, candidate, floors):
        if a.shape != b.shape:
            return float("inf")
        a, b = a.astype(np.float64), b.astype(np.float64)
        scale = max(float(np.max(np.abs(a))) if a.size else 0.0, floor)
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
    extra, floors = compared_tensors(model)
    gone = removed_positions(groups, keep)
    zero_feeds, cut_feeds = io_feeds(feeds, gone)
    try:
        zeroed = run(with_outputs(zero_out(model, groups, keep), extra, copy=False), zero_feeds)
        pruned = run(with_outputs(cut(model, groups, keep), extra, copy=False), cut_feeds)
    except ModelError as exc:
        return Check(group.id, len(removed), float("inf"), str(exc))
    except Exception as exc:  # onnxruntime refusing the cut model is a failed check, reported as such
        return Check(group.id, len(removed), float("inf"), f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    compared = [*model.output_names, *extra]
    reference = [_kept_part(t, name, gone) for t, name in zip(zeroed, compared)]
    floors = argument_floors(model, compared, reference, floors)
    return Check(group.id, len(removed), relative_difference(reference, pruned, floors))


def io_feeds(feeds, gone):
    """(M0's feeds, M1's feeds) when a cut changes graph inputs (a KV cache, allow_io_change): M0 gets
    zeros where the cut channels go, what the zeroed model itself would have cached, and M1 the input
    without them. Unchanged inputs are the same arrays in both."""
    zeroed, cut_feeds = dict(feeds), dict(feeds)
    for name, array in feeds.items():
        axes = [(axis, positions) for (tensor, axis), positions in gone.items() if tensor == name]
        if not axes:
            continue
        zero = np.array(array, copy=True)
        for axis, positions in axes:
            index = [slice(None)] * zero.ndim
            index[axis] = positions
            zero[tuple(index)] = 0
        zeroed[name], cut_feeds[name] = zero, _kept_part(array, name, gone)
    return zeroed, cut_feeds


def kept_outputs(outputs, names, gone):
    """M0's outputs restricted to what survives the cut (outputs a cut changes: a KV cache)."""
    return [_kept_part(t, name, gone) for t, name in zip(outputs, names)]


def compared_tensors(model):
    """(tensors compared besides the outputs, the floor of each compared tensor's scale, outputs first)."""
    producer = producers(model.graph)
    extra = penultimate_tensors(model)
    for name in [*model.output_names, *extra]:
        node = producer.get(name)
        if node is not None and _bounded(node) and _comparable(model, node.input[0]) \
                and node.input[0] not in extra and node.input[0] not in model.output_names:
            extra.append(node.input[0])
    return extra, scale_floors(model, [*model.output_names, *extra])


def scale_floors(model, names):
    """Per tensor, the least scale it is compared on: 1 for a bounded function's value, else 0."""
    producer = producers(model.graph)
    return [1.0 if name in producer and _bounded(producer[name]) else 0.0 for name in names]


def outputs_and_arguments(model):
    """(the outputs and the arguments of the bounded ops that make them, the floor of each one's scale):
    what a cut model is compared on against the model it was cut from."""
    names = [*model.output_names, *bounded_arguments(model, model.output_names)]
    return names, scale_floors(model, names)


def bounded_arguments(model, names):
    """The arguments of the bounded ops (OpSpec.bounded) that make tensors of `names`, not among them."""
    producer = producers(model.graph)
    args = [producer[name].input[0] for name in names if name in producer and _bounded(producer[name])]
    return [a for a in dict.fromkeys(args) if _comparable(model, a) and a not in names]


def argument_floors(model, names, reference, floors):
    """`floors` with a bounded op's value compared on at least its slope times its argument's scale, when the
    argument is among the compared tensors (its own check bounds the value's difference by as much)."""
    producer, index = producers(model.graph), {name: k for k, name in enumerate(names)}
    out = list(floors)
    for k, name in enumerate(names):
        node = producer.get(name)
        if node is None or not _bounded(node) or node.input[0] not in index:
            continue
        arg = reference[index[node.input[0]]]
        slope = max(1.0, float(attribute(node, "alpha", 0.2))) if node.op_type == "HardSigmoid" else 1.0
        out[k] = max(out[k], slope * float(np.max(np.abs(arg))) if arg.size else 0.0)
    return out


def _bounded(node):
    spec = spec_of(node)
    return spec is not None and spec.bounded


def _comparable(model, name):
    return bool(name) and name not in model.initializers and model.is_float(name)


def penultimate_tensors(model):
    """Activations feeding the nodes that make the outputs: compared too, since an output can be
    blind to its input (a zero-initialised head gives zero logits whatever happens before it)."""
    producer = producers(model.graph)
    names = []
    for out in model.output_names:
        node = producer.get(out)
        for name in (node.input if node is not None else []):
            if _comparable(model, name) and name not in names and name not in model.output_names:
                names.append(name)
    return names


def _kept_part(array, name, gone):
    """M0's tensor restricted to the positions that survive the cut, to compare with M1's."""
    for axis in range(array.ndim):
        positions = gone.get((name, axis))
        if positions is not None:
            array = np.delete(array, positions, axis=axis)
    return array


def _passed_through(model, unit):
    """{the join's output: the input that replaces it} for an Add join an erasure removes (surgery.erase):
    a compared tensor (the join feeding the node that makes an output) is the kept input in the cut model."""
    if unit.kind != "add":
        return {}
    join = next(n for n in model.graph.node if (n.name or n.output[0]) == unit.join)
    return {join.output[0]: unit.keep_input} if join.output[0] not in model.output_names else {}


def _run_named(proto, names, renamed, feeds):
    """The values of `names` in a run of `proto`, each read under its name there (`renamed`)."""
    there = [renamed.get(name, name) for name in names]
    made = with_outputs(proto, there, copy=False)
    values = dict(zip([o.name for o in made.graph.output], run(made, feeds)))
    return [values[name] for name in there]


def certify(analysis, subsets=3, seed=0, feeds=None):
    """Check every prunable group on `subsets` random ZIG subsets; returns a Certificate.

    feeds: the inputs to compare on (default: random ones, symbolic dims of size 2)."""
    model = analysis.model
    rng = np.random.default_rng(seed)
    feeds = random_inputs(model, rng) if feeds is None else feeds
    try:
        step("running the dense model")
        run(model.proto, feeds)
    except Exception as exc:
        shapes = {k: v.shape for k, v in feeds.items()}
        raise ModelError(f"{model.name}: the model itself does not run on inputs {shapes} "
                         f"({str(exc).splitlines()[0][:160]})") from None
    cert = Certificate(len(analysis.groups), len(analysis.prunable), units_total=len(analysis.erasable))
    for group in progress.bar(analysis.prunable, desc="certify groups", unit="group"):
        for size in subset_sizes(group.num_zigs, subsets):
            removed = rng.choice(group.num_zigs, size=size, replace=False)
            step(f"checking group {group.id} ({size} ZIGs cut)")
            cert.checks.append(check_group(model, analysis.groups, group, removed, feeds))
    for unit in progress.bar(analysis.erasable, desc="certify branches", unit="branch"):
        step(f"checking erasable branch {unit.id}")
        cert.unit_checks.append(check_unit(model, analysis.groups, unit, feeds))
    return cert


def certify_file(path, feeds, input_shapes=None, subsets=3, seed=0, what=None, allow_io_change=False):
    """certify() of the model file at `path` on `feeds`, in a child process: onnxruntime dying on a
    cut model is one ModelError naming the group, not a dead command."""
    with tempfile.TemporaryDirectory(prefix="onnxoto-verify-") as folder:
        folder = Path(folder)
        np.savez(folder / "feeds.npz", **feeds)
        (folder / "job.json").write_text(json.dumps({"path": str(Path(path).resolve()), "subsets": subsets,
                                                     "seed": seed, "input_shapes": input_shapes or {},
                                                     "allow_io_change": allow_io_change}))
        run_child("onnxoto.verify.certify:certify_here", folder, what or f"verify: {Path(path).name}")
        state = json.loads((folder / "certificate.json").read_text())
    return Certificate(**{**state, "checks": [Check(**c) for c in state["checks"]],
                          "unit_checks": [Check(**c) for c in state["unit_checks"]]})


def certify_here(folder):
    """The child's side of certify_file."""
    folder = Path(folder)
    job = json.loads((folder / "job.json").read_text())
    with np.load(folder / "feeds.npz", allow_pickle=False) as data:
        feeds = {name: data[name] for name in data.files}
    step("analyzing the model")
    shapes = {k: tuple(v) for k, v in job["input_shapes"].items()}
    analysis = grouping.analyze(graph.load(job["path"], strict=True, input_shapes=shapes),
                                allow_io_change=job.get("allow_io_change", False))
    cert = certify(analysis, subsets=job["subsets"], seed=job["seed"], feeds=feeds)
    (folder / "certificate.json").write_text(json.dumps(asdict(cert)))


def check_unit(model, groups, unit, feeds):
    """Erasing a branch equals zeroing all its parameters."""
    extra, floors = compared_tensors(model)
    passed = _passed_through(model, unit)
    try:
        zeroed = run(with_outputs(zero_units(model.proto, [unit]), extra, copy=False), feeds)
        erased = _run_named(cut(model, groups, keep_all(groups), [unit]), [*model.output_names, *extra], passed, feeds)
    except Exception as exc:
        return Check(unit.id, 1, float("inf"), f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    n = len(model.output_names)
    kept = [_kept_part(t, name, unit.removed) for t, name in zip(zeroed[n:], extra)]
    reference = zeroed[:n] + kept
    floors = argument_floors(model, [*model.output_names, *extra], reference, floors)
    return Check(unit.id, 1, relative_difference(reference, erased, floors))
