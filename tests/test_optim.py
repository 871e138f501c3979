"""The sparse optimizers on synthetic problems with known answers (numpy; CuPy when a GPU is present)."""
import io

import numpy as np
import pytest

from onnxoto.errors import OptionError
from onnxoto.optim import SGD, AdamW, Dhspg, Hesso, HessoCric, ZigGroup, ZigSlice, default_schedule


def rows_group(gid, param, n, round_to=1, flops=1.0):
    """A group whose ZIG i is row i of `param`."""
    return ZigGroup(gid, n, [ZigSlice(param, 0, np.arange(n)[:, None])], flops_per_zig=flops, round_to=round_to)


# --- base directions against the documented formulas ------------------------------------------


def test_sgd_matches_the_torch_formula():
    rng = np.random.default_rng(0)
    p = rng.standard_normal(5).astype(np.float32)
    grads = [rng.standard_normal(5).astype(np.float32) for _ in range(4)]
    for nesterov in (False, True):
        lr, mom, damp, wd = 0.1, 0.9, 0.0 if nesterov else 0.1, 0.01
        opt, x = SGD(lr, mom, nesterov, damp, wd), p.copy()
        ref, buf = p.astype(np.float64), None
        for g in grads:
            opt.update("p", x, g)
            d = g + wd * ref
            buf = d if buf is None else mom * buf + (1 - damp) * d
            ref = ref - lr * (d + mom * buf if nesterov else buf)
        np.testing.assert_allclose(x, ref, atol=1e-6)


@pytest.mark.parametrize("decoupled", [True, False])
def test_adam_and_adamw_match_the_torch_formula(decoupled):
    rng = np.random.default_rng(1)
    p = rng.standard_normal(6).astype(np.float32)
    lr, (b1, b2), eps, wd = 1e-2, (0.9, 0.999), 1e-8, 0.05
    opt, x, ref = AdamW(lr, (b1, b2), eps, wd, decoupled), p.copy(), p.astype(np.float64)
    m = v = np.zeros(6)
    for t in range(1, 6):
        g = rng.standard_normal(6).astype(np.float32)
        opt.update("p", x, g)
        if decoupled:
            ref = ref * (1 - lr * wd)
        else:
            g = g + wd * ref
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        ref = ref - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    np.testing.assert_allclose(x, ref, atol=1e-6)


# --- HESSO -------------------------------------------------------------------------------------


def least_squares(signal_rows, n_rows=8, dim=4, samples=256, seed=0):
    """y = sum over signal rows of <W_true[r], x_r>: only those rows of W matter."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((samples, n_rows, dim)).astype(np.float32)
    W_true = np.zeros((n_rows, dim), np.float32)
    W_true[signal_rows] = rng.standard_normal((len(signal_rows), dim)) + 2.0
    y = np.einsum("snd,nd->s", X, W_true)
    def grad(W):
        residual = np.einsum("snd,nd->s", X, W) - y
        return (np.einsum("s,snd->nd", residual, X) / samples).astype(np.float32)
    return grad, rng.standard_normal((n_rows, dim)).astype(np.float32) * 0.1


def test_hesso_keeps_exactly_the_groups_that_carry_signal():
    signal = [1, 4, 6]
    grad, W = least_squares(signal)
    params = {"W": W}
    opt = Hesso(params, [rows_group("W", "W", 8)], SGD(lr=0.1), total_steps=400, target_sparsity=5 / 8)
    for _ in range(400):
        opt.step({"W": grad(params["W"])})
    assert np.flatnonzero(opt.keep_masks()["W"]).tolist() == signal
    assert np.all(params["W"][~opt.keep_masks()["W"]] == 0)


def test_one_global_ranking_keeps_the_signal_rows_across_groups():
    """Signal rows spread over two groups of different sizes: the ranking is global, not per group."""
    grad, W = least_squares([1, 2, 3, 9], n_rows=12, seed=3)
    params = {"a": W[:4].copy(), "b": W[4:].copy()}
    opt = Hesso(params, [rows_group("a", "a", 4), rows_group("b", "b", 8)], SGD(lr=0.1, momentum=0.5),
                total_steps=400, target_sparsity=8 / 12)
    for _ in range(400):
        g = grad(np.concatenate([params["a"], params["b"]]))
        opt.step({"a": g[:4], "b": g[4:]})
    masks = opt.keep_masks()
    assert np.flatnonzero(np.concatenate([masks["a"], masks["b"]])).tolist() == [1, 2, 3, 9]


def test_state_dict_saves_without_pickle():
    rng = np.random.default_rng(16)
    params = {"w": rng.standard_normal((6, 2)).astype(np.float32)}
    opt = Hesso(params, [rows_group("w", "w", 6)], AdamW(0.01), total_steps=20, target_sparsity=0.5)
    for _ in range(8):
        opt.step({"w": rng.standard_normal((6, 2)).astype(np.float32)})
    buffer = io.BytesIO()
    np.savez(buffer, **opt.state_dict())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as data:
        restored = {k: (data[k] if data[k].ndim else data[k].item()) for k in data.files}
    other = Hesso({"w": params["w"].copy()}, [rows_group("w", "w", 6)], AdamW(0.01), total_steps=20,
                  target_sparsity=0.5)
    other.load_state_dict(restored)
    assert other.t == 8 and np.array_equal(other.keep_masks()["w"], opt.keep_masks()["w"])


def test_target_reached_exactly_with_divisibility_and_exact_zeros_held():
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal((32, 3)).astype(np.float32), "b": rng.standard_normal((24, 3)).astype(np.float32)}
    groups = [rows_group("a", "a", 32, round_to=8), rows_group("b", "b", 24, round_to=8)]
    opt = Hesso(params, groups, SGD(lr=0.01), total_steps=100, target_sparsity=0.5,
                start_pruning_step=10, pruning_steps=40, pruning_periods=4)
    zero_since = {}
    for t in range(100):
        opt.step({k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()})
        for gid, mask in opt.keep_masks().items():
            zero = np.flatnonzero(np.all(params[gid] == 0, axis=1))
            for z in zero:
                zero_since.setdefault((gid, z), t)
    masks = opt.keep_masks()
    kept = {gid: int(m.sum()) for gid, m in masks.items()}
    assert all(k % 8 == 0 and k > 0 for k in kept.values())
    assert 56 - sum(kept.values()) in (24, 32)  # the target (28) within one block of 8
    for gid, mask in masks.items():
        assert np.all(params[gid][~mask] == 0)  # exactly zero, and held (checked every step below)
    for (gid, z), t in zero_since.items():
        assert not masks[gid][z]
        assert t in (19, 29, 39, 49)  # the last step of a period: the fade reaches zero exactly there


def test_exact_target_without_rounding_and_kept_zigs_untouched_by_the_projection():
    rng = np.random.default_rng(2)
    start = rng.standard_normal((20, 5)).astype(np.float32)
    grads = [rng.standard_normal((20, 5)).astype(np.float32) for _ in range(60)]
    params, plain = {"w": start.copy()}, start.copy()
    opt, base = Hesso(params, [rows_group("w", "w", 20)], SGD(lr=0.05, momentum=0.9), total_steps=60,
                      target_sparsity=0.35), SGD(lr=0.05, momentum=0.9)
    for g in grads:  # gradients independent of the parameters: kept rows must follow plain SGD exactly
        opt.step({"w": g})
        base.update("w", plain, g)
    keep = opt.keep_masks()["w"]
    assert (~keep).sum() == 7
    np.testing.assert_array_equal(params["w"][keep], plain[keep])
    assert np.all(params["w"][~keep] == 0)


def test_flops_target_reached():
    rng = np.random.default_rng(3)
    params = {"a": rng.standard_normal((10, 2)).astype(np.float32), "b": rng.standard_normal((10, 2)).astype(np.float32)}
    groups = [rows_group("a", "a", 10, flops=100.0), rows_group("b", "b", 10, flops=10.0)]
    opt = Hesso(params, groups, SGD(lr=0.01), total_steps=50, target_flops=0.4)
    for _ in range(50):
        opt.step({k: np.zeros_like(v) for k, v in params.items()})
    masks = opt.keep_masks()
    removed = 100 * (~masks["a"]).sum() + 10 * (~masks["b"]).sum()
    assert removed >= 0.4 * 1100
    assert removed - 100 < 0.4 * 1100  # stops once the budget is met (within one ZIG)


@pytest.mark.parametrize("kwargs", [dict(pruning_steps=3, pruning_periods=5), dict(target_sparsity=1.0),
                                    dict(start_pruning_step=90, pruning_steps=20), dict(target_sparsity=0.0),
                                    dict(start_pruning_step=100), dict(target_flops=1.0),
                                    dict(saliency_weights={"magnitud": 1.0})])
def test_impossible_settings_are_refused(kwargs):
    params = {"w": np.ones((4, 2), np.float32)}
    with pytest.raises(OptionError):
        Hesso(params, [rows_group("w", "w", 4)], SGD(), total_steps=100, **kwargs)


def test_default_schedule_is_not_one_shot():
    s = default_schedule(1000)
    assert s.start == 100 and s.periods == 10 and s.period_length >= 10 and s.end <= 1000


def test_default_pruning_length_fits_a_late_start_and_a_start_past_the_end_is_refused():
    s = default_schedule(100, start=90)
    assert s.start == 90 and s.end == 100 and s.periods == 10
    with pytest.raises(OptionError, match="past the end"):
        default_schedule(100, start=100)


def test_snapshot_and_restore_are_bit_identical():
    rng = np.random.default_rng(4)
    params = {"w": rng.standard_normal((6, 3)).astype(np.float32)}
    opt = Hesso(params, [rows_group("w", "w", 6)], AdamW(lr=0.01), total_steps=40, target_sparsity=0.5)
    for _ in range(15):
        opt.step({"w": rng.standard_normal((6, 3)).astype(np.float32)})
    buffer = params["w"]
    before = (buffer.copy(), {k: np.array(v, copy=True) for k, v in opt.state_dict().items()})
    opt.snapshot()
    for _ in range(10):
        opt.step({"w": rng.standard_normal((6, 3)).astype(np.float32)})
    opt.restore()
    assert params["w"] is buffer  # restored in place: the external buffer is the same object
    np.testing.assert_array_equal(params["w"], before[0])
    after = opt.state_dict()
    assert set(after) == set(before[1])
    for k, v in before[1].items():
        np.testing.assert_array_equal(np.asarray(after[k]), v)


def test_state_dict_resumes_the_same_trajectory():
    rng = np.random.default_rng(5)
    grads = [rng.standard_normal((8, 2)).astype(np.float32) for _ in range(40)]
    start = rng.standard_normal((8, 2)).astype(np.float32)
    a = {"w": start.copy()}
    full = Hesso(a, [rows_group("w", "w", 8)], SGD(0.05, 0.9), total_steps=40, target_sparsity=0.5)
    for g in grads:
        full.step({"w": g})
    b = {"w": start.copy()}
    first = Hesso(b, [rows_group("w", "w", 8)], SGD(0.05, 0.9), total_steps=40, target_sparsity=0.5)
    for g in grads[:17]:
        first.step({"w": g})
    state = {k: np.array(v, copy=True) for k, v in first.state_dict().items()}
    c = {"w": b["w"].copy()}
    second = Hesso(c, [rows_group("w", "w", 8)], SGD(0.05, 0.9), total_steps=40, target_sparsity=0.5)
    second.load_state_dict(state)
    for g in grads[17:]:
        second.step({"w": g})
    np.testing.assert_array_equal(c["w"], a["w"])


# --- CRIC and DHSPG ----------------------------------------------------------------------------


def test_cric_corrects_a_group_that_magnitude_misranks():
    """Group A: small weights on large features (they matter); group B: large weights on tiny features."""
    rng = np.random.default_rng(6)
    X = np.concatenate([rng.standard_normal((128, 4)) * 100, rng.standard_normal((128, 4)) * 0.01], axis=1)
    w_true = np.concatenate([np.full(4, 0.1), np.full(4, 1.0)])
    y = X @ w_true

    def make():
        params = {"a": np.full((4, 1), 0.1, np.float32), "b": np.full((4, 1), 1.0, np.float32)}
        loss = lambda: float(np.mean((X @ np.concatenate([params["a"][:, 0], params["b"][:, 0]]) - y) ** 2))
        return params, loss

    groups = lambda: [rows_group("a", "a", 4), rows_group("b", "b", 4)]
    zero = {"a": np.zeros((4, 1), np.float32), "b": np.zeros((4, 1), np.float32)}
    params, plain_loss = make()
    plain = Hesso(params, groups(), SGD(lr=0.0), total_steps=20, target_sparsity=0.5, pruning_periods=1,
                  saliency_weights={"magnitude": 1.0})
    for _ in range(20):
        plain.step(zero)
    params, loss = make()
    cric = HessoCric(params, groups(), SGD(lr=0.0), total_steps=20, target_sparsity=0.5, pruning_periods=1,
                     saliency_weights={"magnitude": 1.0}, loss_fn=loss, sensitivity_weight=5.0)
    for _ in range(20):
        cric.step(zero)
    assert plain.keep_masks()["a"].sum() == 1  # magnitude alone prunes the important group
    assert cric.keep_masks()["a"].sum() > plain.keep_masks()["a"].sum()
    assert loss() < plain_loss() / 2  # the pruned network is much better


def test_dhspg_hits_the_target_without_stalling_or_overshooting():
    grad, W = least_squares([0, 3], n_rows=10)
    params = {"W": W}
    opt = Dhspg(params, [rows_group("W", "W", 10)], SGD(lr=0.05), total_steps=300, target_sparsity=0.6)
    for _ in range(300):
        opt.step({"W": grad(params["W"])})
    keep = opt.keep_masks()["W"]
    assert (~keep).sum() == 6
    assert np.all(params["W"][~keep] == 0) and np.all(np.any(params["W"][keep] != 0, axis=1))


def test_cric_cycles_correct_a_pair_that_is_only_cheap_one_at_a_time():
    """a1 and b1 carry the same feature: each alone is cheap to prune, both together cost the feature.
    Magnitude ranks them lowest; the cycles see the loss their joint removal causes and swap one out."""
    rng = np.random.default_rng(8)
    features = rng.standard_normal((2000, 8))
    features[:, 4] = features[:, 0] + 0.01 * rng.standard_normal(2000)  # b1 duplicates a1
    w = np.array([0.3, 1, 1, 1, 0.3, 0.32, 1, 1])
    y = features @ w + 0.05 * rng.standard_normal(2000)

    def prune(cycles):
        params = {"a": w[:4, None].astype(np.float32), "b": w[4:, None].astype(np.float32)}
        loss = lambda: float(np.mean((features @ np.concatenate([params["a"][:, 0], params["b"][:, 0]]) - y) ** 2))
        opt = HessoCric(params, [rows_group("a", "a", 4), rows_group("b", "b", 4)], SGD(lr=0.0), total_steps=20,
                        target_sparsity=0.25, pruning_periods=1, saliency_weights={"magnitude": 1.0}, loss_fn=loss,
                        cric_cycles=cycles, sensitivity_weight=0.0)
        for _ in range(20):
            opt.step({"a": np.zeros((4, 1), np.float32), "b": np.zeros((4, 1), np.float32)})
        masks = opt.keep_masks()
        return np.concatenate([~masks["a"], ~masks["b"]]), loss(), opt.cycles_run

    pruned_plain, loss_plain, _ = prune(cycles=0)
    pruned_cric, loss_cric, cycles_run = prune(cycles=3)
    assert np.flatnonzero(pruned_plain).tolist() == [0, 4]  # both copies of the feature
    assert pruned_cric.sum() == 2 and pruned_cric[5] and pruned_cric[0] != pruned_cric[4]  # one copy and b2
    assert loss_cric < 0.6 * loss_plain
    assert cycles_run == [2]  # stopped early: the second cycle repeated the candidate set


def test_cric_leaves_parameters_and_state_as_they_were_after_its_cycles():
    rng = np.random.default_rng(9)
    params = {"w": rng.standard_normal((8, 3)).astype(np.float32)}
    target = rng.standard_normal((8, 3)).astype(np.float32)
    loss = lambda: float(np.sum((params["w"] - target) ** 2))
    grads = [rng.standard_normal((8, 3)).astype(np.float32) for _ in range(12)]
    twin = {"w": params["w"].copy()}
    cric = HessoCric(params, [rows_group("w", "w", 8)], SGD(0.01, 0.9), total_steps=12, target_sparsity=0.25,
                     start_pruning_step=4, pruning_steps=4, pruning_periods=1, loss_fn=loss)
    plain = Hesso(twin, [rows_group("w", "w", 8)], SGD(0.01, 0.9), total_steps=12, target_sparsity=0.25,
                  start_pruning_step=4, pruning_steps=4, pruning_periods=1)
    for g in grads[:5]:  # up to and including the period's first step, where the cycles run
        cric.step({"w": g})
        plain.step({"w": g})
    keep = cric.keep_masks()["w"]
    # same trajectory as HESSO fading the same rows: the simulations left no trace
    plain.pruned = plain.fading = [~keep]
    plain._refresh_elements()
    for g in grads[5:]:
        cric.step({"w": g})
        plain.step({"w": g})
    np.testing.assert_array_equal(params["w"], twin["w"])


def test_dhspg_without_gradient_follows_the_linear_path_to_zero():
    """With no gradient the adaptive push is exactly the one that reaches zero at the period's end."""
    rng = np.random.default_rng(10)
    start = rng.standard_normal((6, 4)).astype(np.float32)
    params = {"w": start.copy()}
    opt = Dhspg(params, [rows_group("w", "w", 6)], SGD(lr=0.1), total_steps=20, target_sparsity=0.5,
                start_pruning_step=0, pruning_steps=5, pruning_periods=1)
    zero = {"w": np.zeros_like(start)}
    for t in range(5):
        opt.step(zero)
        fading = ~opt.keep_masks()["w"]
        np.testing.assert_allclose(params["w"][fading], start[fading] * (4 - t) / 5, atol=1e-6)
    assert np.all(params["w"][fading] == 0) and np.all(params["w"][~fading] == start[~fading])


def test_dhspg_half_space_projection_zeroes_a_zig_its_step_carries_past_the_origin():
    start = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]], np.float32)
    params = {"w": start.copy()}
    opt = Dhspg(params, [rows_group("w", "w", 4)], SGD(lr=1.0), total_steps=40, target_sparsity=0.5,
                start_pruning_step=0, pruning_steps=10, pruning_periods=1, saliency_weights={"magnitude": 1.0})
    opt.step({"w": 1.5 * start})  # every row steps to -0.5 x: through the origin
    fading = ~opt.keep_masks()["w"]
    assert fading.tolist() == [True, True, False, False]
    assert np.all(params["w"][fading] == 0)  # projected at once, not faded over the period
    np.testing.assert_allclose(params["w"][~fading], -0.5 * start[~fading])  # the others: plain SGD


def test_dhspg_push_is_adaptive_against_a_gradient_that_resists():
    """A gradient that pulls the candidates away from zero does not stall them: zero by the period's end."""
    rng = np.random.default_rng(11)
    params = {"w": rng.standard_normal((10, 3)).astype(np.float32)}
    opt = Dhspg(params, [rows_group("w", "w", 10)], SGD(lr=0.05, momentum=0.9), total_steps=60,
                target_sparsity=0.3, start_pruning_step=10, pruning_steps=30, pruning_periods=3)
    for t in range(60):
        opt.step({"w": -params["w"]})  # gradient ascent on the norm: grows every row
        if t in (19, 29, 39):
            pruned = ~opt.keep_masks()["w"]
            assert pruned.sum() == round(0.3 * 10 * (t - 9) / 30)
            assert np.all(params["w"][pruned] == 0)
    assert (~opt.keep_masks()["w"]).sum() == 3 and np.all(params["w"][~opt.keep_masks()["w"]] == 0)


# --- buffers, groups and reports --------------------------------------------------------------


def test_parameters_stay_the_callers_buffers_and_snapshots_reuse_their_copies():
    rng = np.random.default_rng(12)
    params = {"w": rng.standard_normal((8, 2)).astype(np.float32), "free": np.ones(3, np.float32)}
    buffers = dict(params)
    opt = Hesso(params, [rows_group("w", "w", 8)], AdamW(lr=0.01), total_steps=30, target_sparsity=0.5)
    opt.snapshot()
    copies = {k: id(v) for k, v in opt._saved["params"].items()}
    for _ in range(30):
        opt.step({"w": rng.standard_normal((8, 2)).astype(np.float32), "free": np.ones(3, np.float32)})
        opt.snapshot()
        opt.restore()
    assert all(params[k] is buffers[k] for k in buffers)
    assert {k: id(v) for k, v in opt._saved["params"].items()} == copies
    assert np.all(params["free"] < 1)  # a parameter in no group trains with the base direction


def test_one_parameter_in_two_groups_at_disjoint_positions():
    """A BatchNorm after a Concat: its first 4 channels belong to one group, the last 6 to another."""
    rng = np.random.default_rng(13)
    params = {"scale": rng.standard_normal(10).astype(np.float32) + 3, "conv1": rng.standard_normal((4, 5)).astype(np.float32),
              "conv2": rng.standard_normal((6, 5)).astype(np.float32)}
    first = ZigGroup("g1", 4, [ZigSlice("conv1", 0, np.arange(4)[:, None]), ZigSlice("scale", 0, np.arange(4)[:, None])])
    second = ZigGroup("g2", 6, [ZigSlice("conv2", 0, np.arange(6)[:, None]),
                                ZigSlice("scale", 0, 4 + np.arange(6)[:, None])])
    opt = Hesso(params, [first, second], SGD(lr=0.01), total_steps=40, target_sparsity=0.5)
    for _ in range(40):
        opt.step({k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()})
    masks = opt.keep_masks()
    assert (~masks["g1"]).sum() + (~masks["g2"]).sum() == 5
    assert np.all(params["conv1"][~masks["g1"]] == 0) and np.all(params["conv2"][~masks["g2"]] == 0)
    np.testing.assert_array_equal(params["scale"] == 0, np.concatenate([~masks["g1"], ~masks["g2"]]))


def test_keep_masks_cover_every_group_given():
    params = {"w": np.ones((6, 2), np.float32), "v": np.ones((1, 2), np.float32)}
    single = ZigGroup("single", 1, [ZigSlice("v", 0, np.arange(1)[:, None])])
    opt = Hesso(params, [rows_group("w", "w", 6), single], SGD(), total_steps=10, target_sparsity=0.5)
    assert set(opt.keep_masks()) == {"w", "single"} and opt.keep_masks()["single"].tolist() == [True]


def test_metrics_follow_the_phases():
    rng = np.random.default_rng(14)
    params = {"w": rng.standard_normal((10, 2)).astype(np.float32)}
    opt = Hesso(params, [rows_group("w", "w", 10)], SGD(lr=0.01), total_steps=30, target_sparsity=0.4,
                start_pruning_step=5, pruning_steps=10, pruning_periods=2)
    seen = []
    for _ in range(30):
        opt.step({"w": np.zeros((10, 2), np.float32)})
        seen.append(opt.metrics())
    assert seen[0]["phase"] == "warm-up" and seen[5]["phase"] == "pruning 1/2" and seen[-1]["phase"] == "fine-tune"
    assert seen[5]["zigs_fading"] == 2 and seen[5]["zigs_zero"] == 0 and seen[5]["norm_fading"] > 0
    assert seen[9]["zigs_zero"] == 2 and seen[9]["group_sparsity"] == 0.2
    assert seen[-1]["zigs_zero"] == 4 and seen[-1]["group_sparsity"] == 0.4 and seen[-1]["norm_fading"] == 0
    assert all(isinstance(v, (int, float, str)) for v in seen[-1].values())


def test_dhspg_resumes_mid_period_on_the_same_trajectory():
    rng = np.random.default_rng(15)
    grads = [rng.standard_normal((8, 2)).astype(np.float32) for _ in range(30)]
    start = rng.standard_normal((8, 2)).astype(np.float32)
    make = lambda p: Dhspg(p, [rows_group("w", "w", 8)], SGD(0.05, 0.9), total_steps=30, target_sparsity=0.5)
    a = {"w": start.copy()}
    full = make(a)
    for g in grads:
        full.step({"w": g})
    b = {"w": start.copy()}
    first = make(b)
    for g in grads[:7]:
        first.step({"w": g})
    state = {k: np.array(v, copy=True) for k, v in first.state_dict().items()}
    second = make(b)
    second.load_state_dict(state)
    for g in grads[7:]:
        second.step({"w": g})
    np.testing.assert_array_equal(b["w"], a["w"])


# --- numpy and CuPy run the same code ----------------------------------------------------------


def _cupy_or_skip():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no GPU")
    except Exception:
        pytest.skip("no GPU")
    return cupy


@pytest.mark.parametrize("kind", ["hesso-sgd", "hesso-adamw", "cric", "dhspg"])
def test_numpy_and_cupy_agree(kind):
    cupy = _cupy_or_skip()
    rng = np.random.default_rng(7)
    start = rng.standard_normal((16, 4)).astype(np.float32)
    target = rng.standard_normal((16, 4)).astype(np.float32)
    grads = [rng.standard_normal((16, 4)).astype(np.float32) for _ in range(30)]

    def make(params, xp):
        base = AdamW(0.01) if kind == "hesso-adamw" else SGD(0.05, 0.9)
        common = dict(total_steps=30, target_sparsity=0.5, start_pruning_step=4, pruning_steps=20, pruning_periods=4)
        if kind == "cric":
            loss = lambda: float(xp.sum((params["w"] - xp.asarray(target)) ** 2))
            return HessoCric(params, [rows_group("w", "w", 16, round_to=2)], base, loss_fn=loss, **common)
        cls = Dhspg if kind == "dhspg" else Hesso
        return cls(params, [rows_group("w", "w", 16, round_to=2)], base, **common)

    host, device = {"w": start.copy()}, {"w": cupy.asarray(start)}
    a, b = make(host, np), make(device, cupy)
    for g in grads:
        a.step({"w": g})
        b.step({"w": cupy.asarray(g)})
    assert isinstance(device["w"], cupy.ndarray)
    np.testing.assert_array_equal(a.keep_masks()["w"], b.keep_masks()["w"])
    np.testing.assert_allclose(host["w"], device["w"].get(), atol=1e-6)


def test_flops_target_is_met_exactly_when_the_cost_model_is_given():
    """Two chained layers: FLOPs = kept_a * kept_b, so per-ZIG estimates overstate joint savings."""
    rng = np.random.default_rng(11)
    params = {"a": rng.standard_normal((10, 2)).astype(np.float32), "b": rng.standard_normal((10, 2)).astype(np.float32)}
    groups = [rows_group("a", "a", 10, flops=10.0), rows_group("b", "b", 10, flops=10.0)]
    exact = lambda keep: float(keep["a"].sum() * keep["b"].sum())  # noqa: E731
    opt = Hesso(params, groups, SGD(lr=0.01), total_steps=50, target_flops=0.5, total_flops=100.0, flops_fn=exact)
    for _ in range(50):
        opt.step({k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()})
    assert 1.0 - exact(opt.keep_masks()) / 100.0 >= 0.5


def test_channels_inside_an_erased_branch_go_with_it_and_count_against_the_budget():
    # branch "a" (4 rows) and a layer "b" outside it; "a"'s rows are the weakest channels too
    def run(erase_fraction):
        params = {"a": np.full((4, 3), 0.1, np.float32), "b": np.array([1.0, 2.0, 3.0, 4.0], np.float32)}
        unit = ZigGroup("unit", 1, [ZigSlice("a", 0, np.arange(4)[None, :])], erasable=True, join="add")
        groups = [rows_group("a:0", "a", 4), rows_group("b:0", "b", 4), unit]
        opt = Hesso(params, groups, SGD(lr=0.0), total_steps=10, target_sparsity=0.5, start_pruning_step=1,
                    pruning_steps=2, pruning_periods=1, erase_fraction=erase_fraction)
        for _ in range(10):
            opt.step({k: np.zeros_like(v) for k, v in params.items()})
        return opt.keep_masks(), params

    masks, params = run(0.99)
    assert not masks["unit"].any() and not masks["a:0"].any()  # the branch, and its channels with it
    assert masks["b:0"].all()  # half of the 8 channels are gone already: nothing else is cut
    assert not params["a"].any() and (params["b"] == [1, 2, 3, 4]).all()
    masks, params = run(0.0)
    assert masks["unit"].all() and masks["a:0"].any()  # a channel group alone is never cut whole
    assert int(sum((~m).sum() for k, m in masks.items() if k != "unit")) == 4  # without erasing: 4 channels


def test_group_scope_ranks_each_channel_against_its_own_layer():
    def pruned(scope):
        params = {"a": np.array([[0.1], [0.2], [0.3], [0.4]], np.float32),
                  "b": np.array([[10.0], [10.5], [11.0], [30.0]], np.float32)}
        opt = Hesso(params, [rows_group("a:0", "a", 4), rows_group("b:0", "b", 4)], SGD(lr=0.0), total_steps=4,
                    target_sparsity=0.25, start_pruning_step=0, pruning_steps=1, pruning_periods=1,
                    saliency_weights={"magnitude": 1.0}, saliency_scope=scope)
        opt.step({k: np.zeros_like(v) for k, v in params.items()})
        return {k: np.flatnonzero(~m).tolist() for k, m in opt.keep_masks().items()}

    assert pruned("global") == {"a:0": [0, 1], "b:0": []}  # the small layer empties first
    # relative to their layer's mean: a's 0.1 is 0.4 of it, b's 10 is 0.65, a's 0.2 is 0.8
    assert pruned("group") == {"a:0": [0], "b:0": [0]}
    with pytest.raises(OptionError):
        pruned("layer")


def test_a_block_wider_than_one_periods_share_is_taken_when_the_run_can_afford_it():
    # "a": 8 weak channels costing 10 each, pruned 4 at a time (40 = 40% of FLOPs, 4x one period's 10%);
    # "b": 8 strong ones costing 1. Half the FLOPs must go: the weak block, not all of b.
    rng = np.random.default_rng(5)
    params = {"a": 0.1 * rng.standard_normal((8, 4)).astype(np.float32),
              "b": 10 + rng.standard_normal((8, 4)).astype(np.float32)}
    groups = [rows_group("a", "a", 8, round_to=4, flops=10.0), rows_group("b", "b", 8, flops=1.0)]
    opt = Hesso(params, groups, SGD(lr=0.0), total_steps=40, target_flops=0.5, total_flops=88.0,
                start_pruning_step=0, pruning_steps=20, pruning_periods=10, saliency_weights={"magnitude": 1.0})
    for _ in range(40):
        opt.step({k: np.zeros_like(v) for k, v in params.items()})
    masks = opt.keep_masks()
    assert (~masks["a"]).sum() == 4  # taken in the first period, though it overshoots that period's share
    assert (~masks["b"]).sum() == 4  # the rest of the budget: 40 + 4 >= 44


def test_widths_follow_the_blocked_convolution_rule():
    from onnxoto.optim.select import allowed_widths, blocks
    assert allowed_widths(64, 16) == [48, 32, 16, 8]  # multiples of the block, or narrower than one block
    assert allowed_widths(16, 16) == [8]
    assert allowed_widths(20, 8) == [16, 8, 4]
    assert allowed_widths(5, 1) == [4, 3, 2, 1]
    score = np.arange(64, 0, -1, dtype=float)  # ZIG 63 is the least salient
    sizes = [len(b) for _, b in blocks(rows_group("g", "g", 64, round_to=16), score, np.zeros(64, bool))]
    assert sizes == [16, 16, 16, 8]
    first = blocks(rows_group("g", "g", 64, round_to=16), score, np.zeros(64, bool))[0][1]
    assert sorted(first) == list(range(48, 64))


def test_a_group_passed_over_for_a_wide_block_does_not_take_its_narrow_last_block():
    # "a": 16 weak channels at round_to 8 (a block of 8, then one of 4: kept 8, then 4); the block of 8
    # costs 80 and would overshoot a budget of 30 by more than it helps, while the block of 4 would fit:
    # taken alone it would keep 12 channels (no allowed width), and not the weakest ones
    from onnxoto.optim.select import select
    rng = np.random.default_rng(7)
    groups = [rows_group("a", "a", 16, round_to=8, flops=10.0), rows_group("b", "b", 40, flops=1.0)]
    scores = [np.sort(rng.uniform(0, 1, 16)), rng.uniform(5, 6, 40)]
    new = select(groups, scores, [np.zeros(16, bool), np.zeros(40, bool)], budget=30.0, cost=[10.0, 1.0])
    assert not new[0].any()
    assert new[1].sum() == 30
