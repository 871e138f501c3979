"""Latency tables (`onnxoto profile`), the knapsack over widths, and `prune --target-latency`."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from onnxoto import graph, groups
from onnxoto.cli import main
from onnxoto.errors import OptionError
from onnxoto.latency import LatencyTable, machine, measure_table
from onnxoto.latency.profile import CALIBRATION
from onnxoto.latency.widths import table_widths
from onnxoto.optim import SGD, Hesso, ZigGroup, ZigSlice
from onnxoto.optim.select import search_latency_budget, select_latency
from onnxoto.prune import PruneOptions, prune

ROOT = os.path.join(os.path.dirname(__file__), "..")
DATA = os.path.join(ROOT, "onnxoto", "data")
MODELS = os.path.join(ROOT, "models")


def synthetic_table(analysis, fast=lambda w: True, batch=8):
    """A table whose savings follow the FLOPs at the `fast` widths and are nothing at the others."""
    entries = {}
    for g in analysis.prunable:
        widths = table_widths(g.num_zigs)
        flops = [analysis.predict_cost({g.id: np.arange(g.num_zigs) < w})[1] / analysis.flops for w in widths]
        entries[g.id] = {"channels": g.num_zigs, "widths": widths, "flops_ratio": flops,
                         "ratio": [f if fast(w) else 1.0 for w, f in zip(widths, flops)]}
    return LatencyTable(batch=batch, threads=1, provider="CPUExecutionProvider", dense_ms=1.0, groups=entries)


def test_knapsack_spends_the_budget_on_the_least_salient_saving_and_skips_slow_widths():
    groups_ = [ZigGroup(id="a", num_zigs=16), ZigGroup(id="b", num_zigs=16)]
    scores = [np.linspace(0.1, 1.6, 16), np.full(16, 5.0)]  # b's channels are all worth more
    pruned = [np.zeros(16, bool), np.zeros(16, bool)]
    fast = {w: (16 - w) / 40 if w % 8 == 0 else -0.05 for w in range(1, 16)}  # only 8 saves anything
    new = select_latency(groups_, scores, pruned, 0.15, [fast, dict(fast)])
    assert new[0].sum() == 8 and not new[1].any()  # a's 8 least salient: one step to the fast width
    assert set(np.flatnonzero(new[0])) == set(range(8))
    more = select_latency(groups_, scores, pruned, 0.35, [fast, dict(fast)])
    assert more[0].sum() == 8 and more[1].sum() == 8  # then b, never to a width off the fast steps


def test_a_thin_layer_is_not_emptied_for_its_cheap_latency():
    """A narrow layer whose channels each save much latency (an early, high-resolution one) against a
    wide one saving the same in all: halving either costs alike, so the budget halves both rather than
    thinning the narrow one to a channel (the demo's blocks.0.conv1 16 -> 1)."""
    groups_ = [ZigGroup(id="narrow", num_zigs=16), ZigGroup(id="wide", num_zigs=64)]
    scores = [np.ones(16), np.ones(64)]
    pruned = [np.zeros(16, bool), np.zeros(64, bool)]
    narrow = {w: 0.4 * (16 - w) / 16 for w in range(1, 16)}
    wide = {w: 0.4 * (64 - w) / 64 for w in range(1, 64)}
    new = select_latency(groups_, scores, pruned, 0.4, [narrow, wide])
    kept = [16 - new[0].sum(), 64 - new[1].sum()]
    assert 4 <= kept[0] <= 12 and 16 <= kept[1] <= 48  # both thinned, neither emptied


def test_budget_search_lands_on_the_measured_goal_and_early_periods_do_not_overshoot():
    """The table's budget is off by a factor (savings together are 0.55 of the sum) and the timing is
    noisy: the search still lands within 3% of the goal; an early period never below it by more."""
    rng = np.random.default_rng(1)
    widths = np.arange(1, 65)

    def choose(budget):  # one group of 64: the kept width that sums to the budget by the table
        saving = (64 - widths) / 64
        return [np.arange(64) < 64 - widths[np.argmin(np.abs(saving - min(budget, 63 / 64)))]]

    def measure(news):
        return [1 - 0.55 * n[0].sum() / 64 * (1 + 0.01 * rng.standard_normal()) for n in news]

    calls = []
    for final in (True, False):
        new, measured, budget = search_latency_budget(choose, lambda n: calls.append(len(n)) or measure(n), 0.5,
                                                      0.5, final)
        truth = 1 - 0.55 * new[0].sum() / 64
        assert abs(truth - 0.5) <= 0.03 * 0.5 + 0.02
        assert (truth <= 0.5 * 1.03 + 0.02) if final else (truth >= 0.5 * 0.97 - 0.02)
        assert 0.8 <= budget <= 1.0
    assert len(calls) <= 2 * 7


def test_each_period_corrects_the_budget_against_the_measured_cut():
    """The table over-promises (cuts together save 0.6 of what it adds up): with a measured latency_fn
    the run still ends at the target; without one it stops where the table says."""
    rng = np.random.default_rng(0)
    entries = {gid: {"channels": 16, "widths": list(range(1, 16)), "ratio": [1 - 0.04 * (16 - w) for w in range(1, 16)],
                     "flops_ratio": [w / 16 for w in range(1, 16)]} for gid in ("a", "b", "c")}
    table = LatencyTable(batch=1, threads=1, provider="CPUExecutionProvider", dense_ms=1.0, groups=entries)

    def measured(keep):
        return 1 - 0.6 * table.additive({gid: int(mask.sum()) for gid, mask in keep.items()})

    def measured_all(keeps):
        return [measured(keep) for keep in keeps]

    ends = []
    for latency_fn in (measured_all, None):
        params = {k: rng.standard_normal((16, 3)).astype(np.float32) for k in entries}
        opt = Hesso(params, [ZigGroup(k, 16, [ZigSlice(k, 0, np.arange(16)[:, None])]) for k in entries], SGD(0.0),
                    total_steps=40, target_latency=0.6, latency=table, latency_fn=latency_fn)
        for _ in range(40):
            opt.step({k: np.zeros_like(v) for k, v in params.items()})
        ends.append(measured(opt.keep_masks()))
        if latency_fn is not None:  # what the search measured for its choice is reported with the metrics
            assert opt.metrics()["latency_measured"] == pytest.approx(ends[0])
    assert 0.6 * 0.97 <= ends[0] <= 0.6 * 1.03
    assert ends[1] > 0.6 * 1.1  # the table alone, trusted: a miss the measurement catches


def test_a_fast_step_larger_than_a_periods_share_is_taken_within_the_runs_budget():
    """VGG's first layers: 24 -> 16 channels is the table's one fast step and saves 0.2, more than a
    period's share (0.05) overshoots by; its saliency per saving is the best. Within the run's budget
    (`limit`) it is taken, as `select` takes a wide block early; without, the wide layer pays instead."""
    groups_ = [ZigGroup(id="early", num_zigs=24), ZigGroup(id="wide", num_zigs=96)]
    scores = [np.ones(24), np.ones(96)]
    pruned = [np.zeros(24, bool), np.zeros(96, bool)]
    early = {w: 0.2 if w == 16 else -0.05 for w in range(1, 24)}
    wide = {w: 0.1 * (96 - w) / 96 for w in range(1, 96)}
    alone = select_latency(groups_, scores, pruned, 0.05, [early, wide])
    assert not alone[0].any() and alone[1].any()
    within = select_latency(groups_, scores, pruned, 0.05, [early, wide], limit=0.5)
    assert within[0].sum() == 8 and not within[1].any()  # the step alone reaches the period's budget
    beyond = select_latency(groups_, scores, pruned, 0.05, [early, wide], limit=0.09)
    assert not beyond[0].any()  # it would overshoot the whole run's budget by more than it helps


def test_an_early_period_never_takes_a_cut_below_its_goal_and_the_least_where_all_are():
    """Timing that is exact: an early period picks the nearest cut at or above its goal, never one just
    below it (an overshoot stays for the rest of the run); where every budget's cut is below the
    goal (one step saves more than the period's share), the one that cuts least."""
    def choose(budget):  # 64 channels, the table's saving linear in the width
        return [np.arange(64) < int(np.clip(round(64 * budget), 0, 63))]

    def measure(news):
        return [1 - n[0].sum() / 64 for n in news]

    new, measured, _ = search_latency_budget(choose, measure, 0.8, 0.25, final=False)
    assert 0.8 <= measured <= 0.8 * 1.03 and measured == 1 - new[0].sum() / 64

    def big_step(budget):  # any budget takes the same 32 channels at least
        return [np.arange(64) < max(32, int(np.clip(round(64 * budget), 0, 63)))]

    new, measured, _ = search_latency_budget(big_step, measure, 0.9, 0.1, final=False)
    assert new[0].sum() == 32 and measured == 0.5


def test_a_periods_big_step_counts_toward_the_next_and_the_run_ends_at_its_target():
    """A run whose cheapest saving is one step of 0.2 (a 24-channel layer to 16): taken in an early
    period, the next periods whose goals it already reached take nothing, and the measured cut still
    ends at the target (the table's sum over-promises: cuts together save 0.7 of it)."""
    rng = np.random.default_rng(0)
    entries = {"early": {"channels": 24, "widths": list(range(1, 24)), "flops_ratio": [w / 24 for w in range(1, 24)],
                         "ratio": [0.8 if w == 16 else 1.05 for w in range(1, 24)]}}
    entries.update({gid: {"channels": 16, "widths": list(range(1, 16)), "flops_ratio": [w / 16 for w in range(1, 16)],
                          "ratio": [1 - 0.03 * (16 - w) for w in range(1, 16)]} for gid in ("b", "c")})
    table = LatencyTable(batch=1, threads=1, provider="CPUExecutionProvider", dense_ms=1.0, groups=entries)

    def measured(keep):
        return 1 - 0.7 * table.additive({gid: int(mask.sum()) for gid, mask in keep.items()})

    calls = []
    sizes = {k: e["channels"] for k, e in entries.items()}
    params = {k: rng.standard_normal((n, 3)).astype(np.float32) for k, n in sizes.items()}
    params["early"][:8] *= 0.01  # its 8 least salient channels are nearly worthless
    opt = Hesso(params, [ZigGroup(k, n, [ZigSlice(k, 0, np.arange(n)[:, None])]) for k, n in sizes.items()], SGD(0.0),
                total_steps=40, target_latency=0.6, latency=table,
                latency_fn=lambda keeps: calls.append(len(keeps)) or [measured(k) for k in keeps])
    widths = []
    for _ in range(40):
        opt.step({k: np.zeros_like(v) for k, v in params.items()})
        widths.append(int(opt.keep_masks()["early"].sum()))
    assert widths[-1] == 16 and 16 in widths[:len(widths) // 2]  # taken early, not left for the end
    assert 0.6 * 0.97 <= measured(opt.keep_masks()) <= 0.6 * 1.03
    assert opt.metrics()["latency_measured"] == pytest.approx(measured(opt.keep_masks()))


def test_joint_correction_inverts_and_auto_block_finds_the_fast_steps():
    analysis = groups.analyze(graph.load(os.path.join(MODELS, "vgg_bnfolded.onnx")))
    table = synthetic_table(analysis, fast=lambda w: w % 16 == 0 or w == 8)
    assert table.auto_block() == 16 and table.auto_rounding() == (16, True)
    assert synthetic_table(analysis).auto_rounding() == (1, True)  # every width as good: the finest block
    # below the block nothing saved (a Conv output computed a whole block wide): no width under 16
    assert synthetic_table(analysis, fast=lambda w: w % 16 == 0).auto_rounding() == (16, False)
    table.calibration = [{"additive": 0.6, "measured": 0.45}, {"additive": 0.3, "measured": 0.25}]
    for keep in (0.8, 0.6, 0.5):
        assert 1 - table.joint_saving(table.additive_for(keep)) == pytest.approx(keep, abs=1e-6)
    assert table.additive_for(0.5) > 0.5  # joint cuts save less than the groups alone say


def test_table_file_round_trip_and_refusals(tmp_path):
    analysis = groups.analyze(graph.load(os.path.join(MODELS, "vgg_bnfolded.onnx")))
    path = tmp_path / "t.json"
    synthetic_table(analysis).save(path)
    again = LatencyTable.load(path)
    assert again.groups == json.loads(path.read_text())["groups"]
    again.check_groups({g.id: g.num_zigs for g in analysis.prunable}, "t.json")
    with pytest.raises(OptionError, match="not a prunable group"):
        again.check_groups({}, "t.json")
    (tmp_path / "bad.json").write_text('{"batch": 1}')
    with pytest.raises(OptionError, match="not a latency table"):
        LatencyTable.load(tmp_path / "bad.json")
    with pytest.raises(OptionError, match="not a JSON file"):
        LatencyTable.load(os.path.join(MODELS, "vgg_bnfolded.onnx"))


def test_measured_table_covers_every_group_with_real_cuts():
    analysis = groups.analyze(graph.load(os.path.join(MODELS, "vgg_bnfolded.onnx")))
    table = measure_table(analysis, batch=2, rounds=2)
    assert set(table.groups) == {g.id for g in analysis.prunable}
    for g in analysis.prunable:
        entry = table.groups[g.id]
        assert entry["widths"] == table_widths(g.num_zigs)
        assert all(r > 0 for r in entry["ratio"]) and all(0 < f < 1 for f in entry["flops_ratio"])
        assert entry["flops_ratio"] == sorted(entry["flops_ratio"])  # narrower: fewer FLOPs
    assert len(table.calibration) == len(CALIBRATION) and table.batch == 2 and table.machine["onnxruntime"]


def test_profile_runs_on_plain_onnxruntime(tmp_path):
    """The command deployers run on the target device: no training build imported on its path."""
    out = tmp_path / "table.json"
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.startswith('onnxruntime.training'):\n"
            "            raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from onnxoto.cli import main\n"
            f"main(['profile', {os.path.join(MODELS, 'vgg_bnfolded.onnx')!r}, '-o', {str(out)!r}, '--batch', '2',"
            " '--threads', '1', '--rounds', '2'])\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    table = LatencyTable.load(out)
    assert table.batch == 2 and table.threads == 1 and "auto would pick" in run.stdout


def test_profile_refuses_a_bad_provider_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["profile", os.path.join(MODELS, "vgg_bnfolded.onnx"), "-o",
                                       str(tmp_path / "t.json"), "--provider", "NoSuchProvider"])
    assert result.exit_code == 2 and "NoSuchProvider" in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "t.json").exists()


def test_prune_to_a_latency_target_follows_the_table_and_measures_the_cut(tmp_path):
    """Odd widths are slow in this table: the cut keeps multiples of 8, reaches the predicted target,
    is certified, and reports the latency measured after the cut next to the target."""
    model = os.path.join(MODELS, "vgg_bnfolded.onnx")
    analysis = groups.analyze(graph.load(model))
    table_path = tmp_path / "table.json"
    synthetic_table(analysis, fast=lambda w: w % 8 == 0).save(table_path)
    rng = np.random.default_rng(0)
    data = tmp_path / "x.npz"
    np.savez(data, x=rng.standard_normal((64, 3, 32, 32)).astype(np.float32))
    lines = []
    result = prune(model, str(data), str(tmp_path / "p.onnx"), log=lines.append,
                   options=PruneOptions(epochs=2, batch_size=16, target_latency=0.6, latency_table=str(table_path),
                                        base="adamw"))
    assert result.verified
    assert all(g["kept"] % 8 == 0 for g in result.groups)
    assert 0.5 <= result.latency["predicted"] <= 0.62
    assert result.latency["measured"] > 0 and result.latency["met"] == (result.latency["measured"] <= 0.66)
    assert any(line.startswith("latency at batch 8:") for line in lines)


def test_a_table_of_this_machine_closes_the_loop_on_measured_cuts(tmp_path):
    """A table that claims this machine (its savings the FLOPs', which over-promise what a cut saves):
    each period's cut is timed, the epoch lines say the measured ratio, and the written model's
    measured latency lands near the target, not where the table alone would stop."""
    model = os.path.join(MODELS, "vgg_bnfolded.onnx")
    analysis = groups.analyze(graph.load(model))
    table = synthetic_table(analysis, batch=16)
    table.machine = machine()
    table.save(tmp_path / "table.json")
    rng = np.random.default_rng(0)
    data = tmp_path / "x.npz"
    np.savez(data, x=rng.standard_normal((64, 3, 32, 32)).astype(np.float32))
    lines = []
    result = prune(model, str(data), str(tmp_path / "p.onnx"), log=lines.append,
                   options=PruneOptions(epochs=2, batch_size=16, target_latency=0.6,
                                        latency_table=str(tmp_path / "table.json"), base="adamw"))
    assert result.verified
    assert any("of dense (measured)" in line for line in lines if line.startswith("epoch"))
    searched = result.history[-1]["latency_measured"]
    assert abs(searched - 0.6) <= 0.1 * 0.6
    assert result.latency["met"]


@pytest.mark.parametrize("narrow_fast", [True, False])
def test_round_to_auto_takes_the_block_the_table_shows_fast(tmp_path, narrow_fast):
    """The block of the table's fast steps; widths below it (8 of 16) only where they save too: on
    AVX-512 onnxruntime computes a narrower Conv output a whole block wide."""
    model = os.path.join(MODELS, "vgg_bnfolded.onnx")
    table_path = tmp_path / "table.json"
    fast = (lambda w: w % 16 == 0 or w == 8) if narrow_fast else (lambda w: w % 16 == 0)
    synthetic_table(groups.analyze(graph.load(model)), fast=fast).save(table_path)
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((64, 3, 32, 32)).astype(np.float32))
    lines = []
    result = prune(model, str(data), str(tmp_path / "p.onnx"), log=lines.append,
                   options=PruneOptions(epochs=2, batch_size=16, target_flops=0.4, round_to="auto",
                                        latency_table=str(table_path), base="adamw"))
    assert result.verified and result.settings["round_to"] == 16 and "--round-to auto: 16" in "\n".join(lines)
    assert result.settings["narrow_widths"] == narrow_fast
    assert all(g["kept"] % 16 == 0 or g["kept"] == g["channels"] or (narrow_fast and g["kept"] == 8)
               for g in result.groups)
    assert any(g["kept"] < g["channels"] for g in result.groups)


@pytest.mark.parametrize("options, message", [
    (dict(target_latency=0.5, target_flops=0.5), "give one target"),
    (dict(target_latency=1.5), "--target-latency"),
    (dict(target_latency=0.5, erase=0.3), "--erase"),
    (dict(round_to="fast"), "--round-to"),
    (dict(round_to=0), "--round-to"),
])
def test_latency_options_are_checked(options, message):
    with pytest.raises(OptionError, match=message):
        PruneOptions(**options).validate()


def test_a_cut_keeps_onnxruntimes_fusions(tmp_path):
    """The graph onnxruntime runs for a cut at block widths (multiples of 16: the NCHWc block of AVX2
    and AVX-512 alike) has the dense one's operators, one for one: Conv+BatchNorm+Relu (+Add) fused,
    blocked layouts kept, no reorder, Gather or Pad added by the cut."""
    import collections

    import onnx
    import onnxruntime as ort

    from onnxoto.groups import keep_all
    from onnxoto.surgery import cut

    model = graph.load(os.path.join(DATA, "fmnist_resnet.onnx"), strict=True)
    analysis = groups.analyze(model)
    keep = keep_all(analysis.prunable)
    for gid, mask in keep.items():  # every group wider than 16 halved (down to a multiple of 16)
        keep[gid] = np.arange(len(mask)) < max(16, len(mask) // 2 // 16 * 16)
    assert any(not m.all() for m in keep.values())

    def optimized_ops(proto, name):
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / name)
        ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return collections.Counter((n.domain, n.op_type) for n in onnx.load(str(tmp_path / name)).graph.node)

    dense = optimized_ops(model.proto, "dense.onnx")
    assert optimized_ops(cut(model, analysis.groups, keep), "cut.onnx") == dense
    assert ("", "BatchNormalization") not in dense  # the fusions are there to keep
