"""Zeroed channels that become a per-channel constant (Paddle's learnable affine blocks: act(x)·s + t) are
removable where the consumer folds the constant into its bias: analysis, surgery and the certificate."""
import numpy as np
import onnx
import pytest

from onnxoto import graph, verify
from onnxoto.groups import analyze, channel_constants, keep_all, zeroed_values
from onnxoto.prune import PruneOptions, prune
from onnxoto.surgery import cut, zero_out
from onnxoto.verify.certify import relative_difference

from edge_helpers import Net, analyze_checked, group_of, run

SCALE, SHIFT = 0.7, 0.3


def affine(n, h, name):
    """Paddle's learnable affine block: a scalar Mul and a scalar Add after the activation."""
    h = n.op("Mul", [n.const(f"{name}.s", np.array([SCALE], np.float32)), h])
    return n.op("Add", [h, n.const(f"{name}.t", np.array([SHIFT], np.float32))])


def conv_bn_act(n, h, cin, cout, name, k=1, act="Relu", group=1, bias=False):
    h = n.conv(h, cin, cout, k=k, group=group, name=name, bias=bias)
    h = n.op("BatchNormalization", [h, n.weight(f"{name}.bn.scale", (cout,)), n.weight(f"{name}.bn.bias", (cout,)),
                                    n.weight(f"{name}.bn.mean", (cout,), scale=0.1),
                                    n.const(f"{name}.bn.var", np.ones(cout, np.float32))])
    return affine(n, n.op(act, [h]), name)


def hard_swish_as_ops(n, h):
    """x · clip(x + 3, 0, 6) / 6, as paddle2onnx writes it."""
    gate = n.op("Clip", [n.op("Add", [h, n.const(n._name("three"), np.float32(3.0))]),
                         n.const(n._name("lo"), np.float32(0.0)), n.const(n._name("hi"), np.float32(6.0))])
    return n.op("Div", [n.op("Mul", [h, gate]), n.const(n._name("six"), np.float32(6.0))])


def lcnet_like(head="gemm", hw=8, last_bias=True):
    """stem (3x3) -> affine -> depthwise 3x3 (padded) -> affine -> pointwise 1x1 -> HardSwish as ops -> affine
    -> 1x1 -> GlobalAveragePool -> Flatten -> Gemm (or MatMul)."""
    n = Net(seed=3)
    h = conv_bn_act(n, n.input(shape=("N", 3, hw, hw)), 3, 8, "stem", k=3)
    h = conv_bn_act(n, h, 8, 8, "dw", k=3, group=8)
    h = n.conv(h, 8, 12, k=1, name="pw", pads=[0, 0, 0, 0])
    h = affine(n, hard_swish_as_ops(n, h), "pw")
    h = conv_bn_act(n, h, 12, 10, "last", k=1, act="HardSwish", bias=last_bias)
    h = n.op("Flatten", [n.op("GlobalAveragePool", [h])])
    if head == "gemm":
        n.op("Gemm", [h, n.weight("fc.weight", (5, 10)), n.weight("fc.bias", (5,))], outputs=["y"], name="fc",
             transB=1)
    else:
        n.op("MatMul", [h, n.weight("fc.weight", (10, 5))], outputs=["y"], name="fc")
    return n.model("y")


# --- analysis: constancy proved from the ops, the fold recorded on the group -----------------------------

def test_a_zeroed_channel_after_an_affine_block_folds_into_the_next_1x1_conv():
    a = analyze_checked(lcnet_like())  # also checks, in onnxruntime, the channels are the computed constant
    stem = group_of(a, "stem.weight", 0)
    assert stem.prunable, stem.reason
    # the depthwise conv is zeroed with the stem (its weights are producers): the constant t after the
    # stem's block is not read; after the depthwise's own block it is, by the 1x1 'pw'
    assert [f.consumer for f in stem.folds] == ["pw"]


def test_a_constant_passes_hard_swish_pooling_and_flatten_into_a_gemm():
    a = analyze_checked(lcnet_like())
    pw = group_of(a, "pw.weight", 0)
    assert pw.prunable and [f.consumer for f in pw.folds] == ["last"]
    last = group_of(a, "last.weight", 0)
    assert last.prunable, last.reason
    assert [f.consumer for f in last.folds] == ["y"]
    ops = {t.split("_")[0] for t, _ in last.constants}
    assert {"globalaveragepool", "flatten", "add"} <= ops


def test_a_constant_folds_into_a_matmul_over_its_reduced_axis():
    last = group_of(analyze_checked(lcnet_like(head="matmul")), "last.weight", 0)
    assert last.prunable and [f.consumer for f in last.folds] == ["y"]


def padded_after_block(pads):
    n = Net(seed=4)
    h = conv_bn_act(n, n.input(shape=("N", 3, 8, 8)), 3, 8, "pre", k=3)
    n.op("Conv", [h, n.weight("post.weight", (4, 8, 3, 3)), n.weight("post.bias", (4,))], outputs=["y"],
         name="post", kernel_shape=[3, 3], pads=pads)
    return n.model("y")


def test_a_padded_3x3_conv_after_the_block_stays_declined_with_the_reason():
    g = group_of(analyze_checked(padded_after_block([1, 1, 1, 1])), "pre.weight", 0)
    assert not g.prunable and not g.folds
    assert g.reason.startswith("zeroed channels are a constant, not zero: Conv 'post' reads them with padding")


def test_an_unpadded_3x3_conv_sums_every_channel_over_its_whole_kernel_and_folds_it():
    a = analyze_checked(padded_after_block([0, 0, 0, 0]))
    g = group_of(a, "pre.weight", 0)
    assert g.prunable and [f.consumer for f in g.folds] == ["y"]
    assert verify.certify(a, subsets=3).passed


@pytest.mark.parametrize("pool, attrs, folds", [
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}, False),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, True),
    ("MaxPool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, True),
    ("LpPool", {"kernel_shape": [2, 2]}, False),
])
def test_pooling_keeps_a_constant_unless_the_window_changes_it(pool, attrs, folds):
    """The mean of a window with its zero padding counted, or an Lp norm, is no longer the constant."""
    n = Net(seed=5)
    h = n.op(pool, [conv_bn_act(n, n.input(shape=("N", 3, 8, 8)), 3, 8, "pre", k=3)], **attrs)
    n.op("Conv", [h, n.weight("post.weight", (4, 8, 1, 1))], outputs=["y"], name="post", kernel_shape=[1, 1])
    a = analyze_checked(n.model("y"))
    g = group_of(a, "pre.weight", 0)
    assert g.prunable == folds, g.reason
    if not folds:
        assert "not exactly zero where Conv 'post'" in g.reason


def test_a_shift_per_channel_that_training_zeroes_is_part_of_the_group():
    """Add(t[C,1,1]) is a producer: zeroed with the group, so the channel is zero, not a constant."""
    n = Net(seed=6)
    h = n.op("Add", [n.conv(n.input(shape=("N", 3, 8, 8)), 3, 8, name="pre"), n.weight("shift", (8, 1, 1))])
    n.op("Conv", [h, n.weight("post.weight", (4, 8, 3, 3))], outputs=["y"], name="post", kernel_shape=[3, 3],
         pads=[1, 1, 1, 1])
    g = group_of(analyze_checked(n.model("y")), "pre.weight", 0)
    assert g.prunable and not g.folds and ("shift", 0) in {(s.name, s.axis) for s in g.producers}


# --- surgery and the certificate -------------------------------------------------------------------------

@pytest.mark.parametrize("head", ["gemm", "matmul"])
def test_the_certificate_holds_for_folded_groups(head):
    a = analyze(graph.from_proto(lcnet_like(head), "lcnet"))
    cert = verify.certify(a, subsets=3)
    assert cert.passed, cert.failures
    assert cert.groups_verified == len(a.prunable) == 3  # stem (with the depthwise), pw, last


def test_without_the_fold_the_certificate_fails(monkeypatch):
    """The certificate can tell: cutting the constant channels without adding them to a bias changes outputs."""
    import onnxoto.surgery.cutter as cutter

    monkeypatch.setattr(cutter, "fold_constants", lambda *args: None)
    a = analyze(graph.from_proto(lcnet_like(), "lcnet"))
    cert = verify.certify(a, subsets=1)
    assert {f.group for f in cert.failures} == {g.id for g in a.prunable if g.folds}


@pytest.mark.parametrize("last_bias", [True, False])
def test_cutting_every_group_at_once_equals_the_zeroed_model(last_bias):
    """Folds into consumers whose own output channels are cut as well (their bias sliced; or made, then sliced)."""
    model = graph.from_proto(lcnet_like(head="matmul", last_bias=last_bias), "lcnet")
    a = analyze(model)
    rng = np.random.default_rng(1)
    keep = keep_all(a.groups)
    for g in a.prunable:
        keep[g.id] = rng.random(g.num_zigs) < 0.5
        keep[g.id][0] = True
    feed = {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}
    zeroed, pruned = run(zero_out(model, a.groups, keep), feed), run(cut(model, a.groups, keep), feed)
    assert relative_difference([zeroed["y"]], [pruned["y"]]) <= verify.TOLERANCE
    proto = cut(model, a.groups, keep)
    made = [n for n in proto.graph.node if n.op_type == "Add" and "fold" in n.name]
    assert len(made) == 1  # the MatMul head has no bias input: an Add after it holds the fold
    assert analyze(graph.from_proto(proto, "cut")).params == a.predict_cost(keep)[0]


def test_prune_end_to_end_cuts_folded_groups_and_certifies(tmp_path):
    path, data = tmp_path / "lcnet.onnx", tmp_path / "x.npz"
    onnx.save(lcnet_like(hw=8), str(path))
    np.savez(data, x=np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32))
    result = prune(str(path), str(data), str(tmp_path / "small.onnx"),
                   options=PruneOptions(epochs=2, batch_size=16, target_sparsity=0.4), log=lambda s: None)
    assert result.verified, result.max_rel_diff
    folded = {g.id for g in analyze(graph.load(str(path))).prunable if g.folds}
    cut_folded = [g for g in result.groups if g["id"] in folded and g["kept"] < g["channels"]]
    assert cut_folded, result.groups
    assert result.pruned["params"] < result.dense["params"]


def two_branches_into_one_consumer(bias):
    """Two affine-block branches concatenated into one 1x1 conv: both groups fold into the same bias."""
    n = Net(seed=7)
    x = n.input(shape=("N", 3, 8, 8))
    h = n.op("Concat", [conv_bn_act(n, x, 3, 4, "left", k=3), conv_bn_act(n, x, 3, 6, "right", k=3)], axis=1)
    n.conv(h, 10, 5, k=1, name="post", pads=[0, 0, 0, 0], bias=bias)
    n.nodes[-1].output[0] = "y"
    return n.model("y")


@pytest.mark.parametrize("bias", [True, False])
def test_two_groups_folding_into_one_conv_cut_together_and_cost_as_predicted(bias):
    model = graph.from_proto(two_branches_into_one_consumer(bias), "two")
    a = analyze(model)
    folding = [g for g in a.prunable if g.folds]
    assert len(folding) == 2 and {f.consumer for g in folding for f in g.folds} == {"y"}
    keep = keep_all(a.groups)
    for g in folding:
        keep[g.id] = np.arange(g.num_zigs) % 2 == 0
    feed = {"x": np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    proto = cut(model, a.groups, keep)
    assert relative_difference([run(zero_out(model, a.groups, keep), feed)["y"]], [run(proto, feed)["y"]]) \
        <= verify.TOLERANCE
    assert analyze(graph.from_proto(proto, "cut")).params == a.predict_cost(keep)[0]  # a bias made when none was


def test_a_constant_is_computed_as_the_models_opset_defines_the_op():
    """Clip-6 takes its bounds as attributes: clip(0) = 0.5 here, as onnxruntime computes it."""
    n = Net(opset=10, seed=8)
    h = n.op("Clip", [n.conv(n.input(shape=("N", 3, 8, 8)), 3, 8, name="pre")], min=0.5, max=6.0)
    n.op("Conv", [h, n.weight("post.weight", (4, 8, 1, 1))], outputs=["y"], name="post", kernel_shape=[1, 1])
    a = analyze_checked(n.model("y", opset=10))  # checks the computed constant against onnxruntime's
    g = group_of(a, "pre.weight", 0)
    assert g.prunable and g.folds
    assert verify.certify(a, subsets=2).passed


@pytest.mark.parametrize("op, keepdims", [("ReduceMean", 1), ("ReduceMean", 0), ("ReduceMax", 1), ("ReduceMin", 0)])
def test_a_constant_passes_a_spatial_mean_max_or_min_into_a_matmul(op, keepdims):
    """x.mean((2, 3)) as PyTorch exports it (ReduceMean), before a linear layer."""
    n = Net(opset=13, seed=9)
    h = n.op(op, [conv_bn_act(n, n.input(shape=("N", 3, 8, 8)), 3, 8, "pre", k=3)], axes=[2, 3], keepdims=keepdims)
    if keepdims:
        h = n.op("Flatten", [h])
    n.op("MatMul", [h, n.weight("fc.weight", (8, 4))], outputs=["y"], name="fc")
    a = analyze_checked(n.model("y"))
    g = group_of(a, "pre.weight", 0)
    assert g.prunable and [f.consumer for f in g.folds] == ["y"], g.reason
    assert verify.certify(a, subsets=2).passed


def test_a_mean_over_the_channels_is_no_constant_per_channel():
    n = Net(opset=13, seed=9)
    h = conv_bn_act(n, n.input(shape=("N", 3, 8, 8)), 3, 8, "pre", k=3)
    h = n.op("Mul", [h, n.op("ReduceMean", [h], axes=[1], keepdims=1)])
    n.op("Conv", [h, n.weight("post.weight", (4, 8, 1, 1))], outputs=["y"], name="post", kernel_shape=[1, 1])
    g = group_of(analyze_checked(n.model("y")), "pre.weight", 0)
    assert not g.prunable


def test_the_brief_block_into_a_1x1_conv_certifies():
    """Conv -> BN -> Relu -> Mul(s) -> Add(t) -> 1x1 Conv: zeroed, the channel is t, folded into the bias."""
    n = Net(seed=10)
    h = conv_bn_act(n, n.input(shape=("N", 3, 8, 8)), 3, 8, "pre", k=3, bias=True)
    n.op("Conv", [h, n.weight("post.weight", (4, 8, 1, 1))], outputs=["y"], name="post", kernel_shape=[1, 1])
    a = analyze_checked(n.model("y"))
    g = group_of(a, "pre.weight", 0)
    assert g.prunable and [f.consumer for f in g.folds] == ["y"]
    const = zeroed_values(a.model, [(s.name, s.axis, s.index.ravel()) for s in g.producers])
    producer = {out: (k, node) for k, node in enumerate(a.model.graph.node) for out in node.output}
    fold = g.folds[0]
    assert np.allclose(channel_constants(a.model, producer, g.constants, const)[fold.tensor], SHIFT)  # s·relu(0) + t
    cert = verify.certify(a, subsets=3)
    assert cert.passed and cert.groups_verified == 1


def test_the_optimizer_zeroes_what_the_cut_assumes_zero():
    """HESSO drives a group's producer slices to zero (conv rows and bias, BN scale and shift, the depthwise
    conv's weights): exactly what zero_out zeroes for the certificate and the fold's constant is computed from."""
    from onnxoto.prune.zigs import optimizer_groups

    a = analyze(graph.from_proto(lcnet_like(), "lcnet"))
    params = [t.name for t in a.model.graph.initializer]
    by_id = {z.id: z for z in optimizer_groups(a, params, round_to=1)}
    for g in a.prunable:
        assert sorted((s.param, s.axis) for s in by_id[g.id].slices) == sorted((s.name, s.axis) for s in g.producers)
    stem = {s.name for s in group_of(a, "stem.weight", 0).producers}
    assert {"stem.bn.scale", "stem.bn.bias", "dw.weight", "dw.bn.scale", "dw.bn.bias"} <= stem
    assert not stem & {"stem.s", "stem.t", "dw.s", "dw.t"}  # the block's scalars train on; the cut reads them then
