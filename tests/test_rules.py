"""One small graph per operator rule: which groups exist, their ZIGs and index maps, and why some are not prunable.

Every prunable group found is also checked numerically (edge_helpers.check_zero_invariance):
zeroing its producer slices for random ZIGs makes the channels zero wherever they are consumed.
"""
import os

import numpy as np
import onnx
import pytest

from edge_helpers import FLOAT, INT64, Net, analyze_checked, analyze_proto, between_convs, check_zero_invariance, \
    group_of, slice_of

MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")


def roles(group):
    return {(s.name, s.axis): s.role for s in group.slices}


def column(n):
    return np.arange(n).reshape(n, 1)


def pre_group(proto, run_check=True):
    return group_of(analyze_checked(proto, run_check=run_check), "pre.weight", 0)


def assert_prunable(group, num_zigs=None):
    assert group.prunable, group.reason
    if num_zigs is not None:
        assert group.num_zigs == num_zigs


def assert_unprunable(group, reason):
    assert not group.prunable
    assert reason in group.reason, group.reason


# --- linear layers ---------------------------------------------------------------------------

def test_conv_couples_out_channels_with_next_conv_in_channels():
    g = pre_group(between_convs(lambda n, h: h))
    assert_prunable(g, 8)
    assert roles(g) == {("pre.weight", 0): "producer", ("pre.bias", 0): "producer", ("post.weight", 1): "consumer"}
    assert np.array_equal(slice_of(g, "post.weight").index, column(8))


def test_grouped_conv_zig_is_a_whole_conv_group():
    g = pre_group(between_convs(lambda n, h: n.conv(h, 8, 8, group=2, name="grouped")))
    assert_prunable(g, 2)
    assert np.array_equal(slice_of(g, "pre.weight").index, [[0, 1, 2, 3], [4, 5, 6, 7]])
    assert roles(g)[("grouped.weight", 0)] == "producer"
    assert np.array_equal(slice_of(g, "post.weight").index, [[0, 1, 2, 3], [4, 5, 6, 7]])


def test_depthwise_conv_channel_passes_through():
    g = pre_group(between_convs(lambda n, h: n.op("Relu", [n.conv(h, 8, 8, group=8, name="dw")])))
    assert_prunable(g, 8)
    assert roles(g)[("dw.weight", 0)] == "producer" and roles(g)[("dw.bias", 0)] == "producer"
    assert roles(g)[("post.weight", 1)] == "consumer"


def test_conv_transpose_reads_axis_0_and_writes_axis_1():
    def middle(n, h):
        w = n.weight("up.weight", (8, 6, 2, 2))
        return n.op("ConvTranspose", [h, w, n.weight("up.bias", (6,), scale=0.1)], name="up", strides=[2, 2])

    a = analyze_checked(between_convs(middle, c_out=6))
    g = group_of(a, "pre.weight", 0)
    assert_prunable(g, 8)
    assert roles(g)[("up.weight", 0)] == "consumer"
    up = group_of(a, "up.weight", 1)
    assert_prunable(up, 6)
    assert roles(up) == {("up.weight", 1): "producer", ("up.bias", 0): "producer", ("post.weight", 1): "consumer"}


def test_gemm_trans_b_1_and_0():
    n = Net()
    h = n.op("Relu", [n.linear(n.input(shape=("N", 16)), 16, 12, name="fc1", trans_b=1)])
    h = n.op("Relu", [n.linear(h, 12, 10, name="fc2", trans_b=0)])
    n.op("Gemm", [h, n.weight("head.weight", (10, 4))], outputs=["y"])
    a = analyze_checked(n.model("y"))
    fc1, fc2 = group_of(a, "fc1.weight", 0), group_of(a, "fc2.weight", 1)
    assert_prunable(fc1, 12)
    assert roles(fc1) == {("fc1.weight", 0): "producer", ("fc1.bias", 0): "producer", ("fc2.weight", 0): "consumer"}
    assert_prunable(fc2, 10)
    assert roles(fc2) == {("fc2.weight", 1): "producer", ("fc2.bias", 0): "producer", ("head.weight", 0): "consumer"}
    assert_unprunable(group_of(a, "fc1.weight", 1), "graph input")


def test_matmul_with_constant_weight():
    n = Net()
    h = n.op("MatMul", [n.input(shape=("N", 5, 16)), n.weight("w1", (16, 12))])
    h = n.op("Relu", [n.op("Add", [h, n.weight("b1", (12,), scale=0.1)])])
    n.op("MatMul", [h, n.weight("w2", (12, 4))], outputs=["y"])
    g = group_of(analyze_checked(n.model("y")), "w1", 1)
    assert_prunable(g, 12)
    assert roles(g) == {("w1", 1): "producer", ("b1", 0): "producer", ("w2", 0): "consumer"}


def test_matmul_between_activations_couples_the_contracted_axis():
    n = Net()
    x = n.input(shape=("N", 5, 16))
    q = n.op("MatMul", [x, n.weight("wq", (16, 8))])
    k = n.op("MatMul", [x, n.weight("wk", (16, 8))])
    scores = n.op("MatMul", [q, n.op("Transpose", [k], perm=[0, 2, 1])])  # (N, 5, 5), sums over the 8 features
    n.op("MatMul", [scores, n.weight("wo", (5, 3))], outputs=["y"])
    g = group_of(analyze_checked(n.model("y")), "wq", 1)
    assert_prunable(g, 8)
    assert roles(g) == {("wq", 1): "producer", ("wk", 1): "producer"}


# --- normalization ---------------------------------------------------------------------------

def test_batch_norm_scale_and_shift_produce_statistics_follow():
    def middle(n, h):
        stats = [n.weight("bn.scale", (8,), offset=1.0), n.weight("bn.bias", (8,), scale=0.1),
                 n.weight("bn.mean", (8,), scale=0.1), n.const("bn.var", np.linspace(0.5, 2, 8).astype(np.float32))]
        return n.op("Relu", [n.op("BatchNormalization", [h] + stats, name="bn")])

    g = pre_group(between_convs(middle))
    assert_prunable(g, 8)
    assert roles(g) == {("pre.weight", 0): "producer", ("pre.bias", 0): "producer", ("bn.scale", 0): "producer",
                        ("bn.bias", 0): "producer", ("bn.mean", 0): "follower", ("bn.var", 0): "follower",
                        ("post.weight", 1): "consumer"}


def test_instance_norm_keeps_channels():
    def middle(n, h):
        return n.op("InstanceNormalization", [h, n.weight("in.scale", (8,), offset=1.0),
                                              n.weight("in.bias", (8,), scale=0.1)])

    g = pre_group(between_convs(middle))
    assert_prunable(g, 8)
    assert roles(g)[("in.scale", 0)] == "producer" and roles(g)[("in.bias", 0)] == "producer"


def test_layer_norm_pins_the_normalized_axis_only():
    n = Net()
    h = n.op("MatMul", [n.input(shape=("N", 5, 16)), n.weight("w1", (16, 12))])
    h = n.op("LayerNormalization", [h, n.weight("ln.scale", (12,), offset=1.0), n.weight("ln.bias", (12,))], axis=-1)
    n.op("MatMul", [h, n.weight("w2", (12, 4))], outputs=["y"])
    a = analyze_checked(n.model("y"))
    assert_unprunable(group_of(a, "w1", 1), "normalized over by LayerNormalization")
    assert_unprunable(group_of(a, "ln.scale", 0), "normalized over by LayerNormalization")


def test_rmsnorm_as_ops_pins_the_hidden_size_as_an_rmsnorm():
    """Llama's RMSNorm exported as Pow/ReduceMean/Add/Sqrt/Div/Mul: the reason names it."""
    n = Net()
    h = n.op("MatMul", [n.input(shape=("N", 5, 16)), n.weight("w1", (16, 12))])
    mean = n.op("ReduceMean", [n.op("Pow", [h, n.const("two", np.array(2.0, np.float32))]), n.ints("last", [-1])], keepdims=1)
    rms = n.op("Sqrt", [n.op("Add", [mean, n.const("eps", np.array(1e-6, np.float32))])])
    h = n.op("Mul", [n.op("Div", [h, rms]), n.weight("rms.scale", (12,), offset=1.0)])
    n.op("MatMul", [h, n.weight("w2", (12, 4))], outputs=["y"])
    a = analyze_checked(n.model("y", opset=18), run_check=False)
    assert_unprunable(group_of(a, "w1", 1), "normalized over by an RMSNorm")


def test_simplified_layer_norm_pins_the_normalized_axis():
    """onnxruntime's fused RMSNorm (no ONNX schema: the file states its output shape)."""
    n = Net()
    h = n.op("MatMul", [n.input(shape=("N", 5, 16)), n.weight("w1", (16, 12))])
    h = n.op("SimplifiedLayerNormalization", [h, n.weight("sln.scale", (12,), offset=1.0)], axis=-1, epsilon=1e-6)
    n.op("MatMul", [h, n.weight("w2", (12, 4))], outputs=["y"])
    proto = n.model("y")
    proto.graph.value_info.append(onnx.helper.make_tensor_value_info(h, FLOAT, ["N", 5, 12]))
    a = analyze_proto(proto)
    assert_unprunable(group_of(a, "w1", 1), "normalized over by SimplifiedLayerNormalization")


def test_concat_over_a_symbolic_axis_couples_the_others():
    """A KV cache: past (N, 2, P, 8) and new keys (N, 2, S, 8) joined over positions; the heads pass."""
    n = Net()
    k = n.op("MatMul", [n.input(shape=("N", "S", 16)), n.weight("wk", (16, 16))])
    k = n.op("Transpose", [n.op("Reshape", [k, n.ints("heads", [0, 0, 2, 8])])], perm=[0, 2, 1, 3])
    both = n.op("Concat", [n.input("past", shape=("N", 2, "P", 8)), k], axis=2)
    n.op("ReduceSum", [both, n.ints("axes", [2, 3])], outputs=["y"], keepdims=0)
    g = group_of(analyze_checked(n.model("y"), run_check=False), "wk", 1)
    assert_unprunable(g, "reaches graph input 'past'")  # the heads got there through the Concat


def test_group_norm_is_unprunable():
    def middle(n, h):
        return n.op("GroupNormalization", [h, n.weight("gn.scale", (8,), offset=1.0), n.weight("gn.bias", (8,))],
                    num_groups=2)

    g = pre_group(between_convs(middle, opset=21), run_check=False)
    assert_unprunable(g, "normalized together by GroupNormalization")


# --- elementwise -------------------------------------------------------------------------------

def _unary(op, **attrs):
    return lambda n, h: n.op(op, [h], **attrs)


@pytest.mark.parametrize("op,attrs,opset", [
    ("Relu", {}, 17), ("LeakyRelu", {"alpha": 0.1}, 17), ("HardSwish", {}, 17), ("Erf", {}, 17),
    ("Tanh", {}, 17), ("Gelu", {}, 20), ("Elu", {}, 17), ("Abs", {}, 17), ("Neg", {}, 17),
])
def test_zero_preserving_unary_ops_pass_channels(op, attrs, opset):
    assert_prunable(pre_group(between_convs(_unary(op, **attrs), opset=opset)), 8)


def assert_folded(group, consumer="y"):
    """Prunable because the zeroed channels are a constant that `consumer` folds into its bias."""
    assert_prunable(group)
    assert [f.consumer for f in group.folds] == [consumer], group.folds


NOT_FOLDED = "zeroed channels are a constant, not zero: Conv 'post' reads them with padding"


@pytest.mark.parametrize("op", ["Sigmoid", "HardSigmoid", "Exp", "Softplus", "Cos"])
def test_non_zero_preserving_ops_before_a_1x1_conv_fold_into_its_bias(op):
    assert_folded(pre_group(between_convs(_unary(op))))


@pytest.mark.parametrize("op", ["Sigmoid", "HardSigmoid", "Exp", "Softplus", "Cos"])
def test_non_zero_preserving_ops_before_a_padded_conv_block_pruning(op):
    """A padded 3x3 conv sums a constant channel 9 times inside, fewer times at the border: no bias takes it."""
    assert_unprunable(pre_group(between_convs(_unary(op), post_k=3)), NOT_FOLDED)


def test_prelu_slope_follows_the_channel():
    g = pre_group(between_convs(lambda n, h: n.op("PRelu", [h, n.weight("slope", (8, 1, 1), scale=0.1)])))
    assert_prunable(g, 8)
    assert roles(g)[("slope", 0)] == "follower"


def _clip(low, high):
    return lambda n, h: n.op("Clip", [h, n.const(f"low{low}", np.float32(low)), n.const(f"high{high}", np.float32(high))])


def test_clip_0_6_is_zero_preserving():
    assert_prunable(pre_group(between_convs(_clip(0.0, 6.0))), 8)


def test_clip_with_positive_min_is_not():
    assert_unprunable(pre_group(between_convs(_clip(0.5, 6.0), post_k=3)), NOT_FOLDED)
    assert_folded(pre_group(between_convs(_clip(0.5, 6.0))))


def _two_convs_into(op):
    def middle(n, h):
        other = n.conv(n.inputs and "x", 3, 8, name="side")
        return n.op(op, [h, other])

    return middle


@pytest.mark.parametrize("op", ["Add", "Sub", "Max", "Min", "Sum"])
def test_additive_ops_couple_both_operands(op):
    a = analyze_checked(between_convs(_two_convs_into(op)))
    g = group_of(a, "pre.weight", 0)
    assert_prunable(g, 8)
    assert roles(g)[("side.weight", 0)] == "producer"
    assert group_of(a, "side.weight", 0) is g


def test_mul_of_two_branches_is_zero_when_either_is():
    g = pre_group(between_convs(_two_convs_into("Mul")))
    assert_prunable(g, 8)
    assert roles(g)[("side.weight", 0)] == "producer"


def test_broadcast_per_channel_constants_are_part_of_the_group():
    def middle(n, h):
        h = n.op("Mul", [h, n.weight("scale", (8, 1, 1), offset=1.0)])
        h = n.op("Sub", [h, n.weight("shift", (8, 1, 1))])
        return n.op("Div", [h, n.const("divisor", np.linspace(1, 2, 8).astype(np.float32).reshape(8, 1, 1))])

    g = pre_group(between_convs(middle))
    assert_prunable(g, 8)
    assert roles(g)[("scale", 0)] == "producer" and roles(g)[("shift", 0)] == "producer"
    assert roles(g)[("divisor", 0)] == "follower"


def test_broadcast_over_spatial_axes_couples_channels():
    """(N, C, H, W) + (N, C, 1, 1): the pooled branch lines up with the channel axis."""
    def middle(n, h):
        pooled = n.op("GlobalAveragePool", [h])
        return n.op("Add", [h, n.conv(pooled, 8, 8, k=1, name="ctx")])

    a = analyze_checked(between_convs(middle))
    assert group_of(a, "pre.weight", 0) is group_of(a, "ctx.weight", 0)
    assert_prunable(group_of(a, "pre.weight", 0), 8)


def test_dividing_by_the_pruned_channels_blocks_pruning():
    def middle(n, h):
        return n.op("Div", [n.weight("num", (8, 1, 1)), n.op("Relu", [h])])

    g = pre_group(between_convs(middle), run_check=False)
    assert not g.prunable


def test_dividing_by_a_never_zero_function_of_the_channels_is_fine():
    def middle(n, h):
        return n.op("Div", [n.weight("num", (8, 1, 1)), n.op("Add", [n.op("Abs", [h]), n.const("eps", np.float32(1.0))])])

    assert_prunable(pre_group(between_convs(middle)), 8)


def test_adding_a_scalar_constant_blocks_pruning_unless_the_consumer_folds_it():
    add_one = lambda n, h: n.op("Add", [h, n.const("one", np.float32(1.0))])  # noqa: E731
    assert_unprunable(pre_group(between_convs(add_one, post_k=3)), NOT_FOLDED)
    assert_folded(pre_group(between_convs(add_one)))


def test_adding_a_varying_tensor_is_no_constant():
    """x + (a tensor that varies over space) is not one value per channel: nothing folds it."""
    def middle(n, h):
        return n.op("Add", [h, n.op("ReduceMean", [n.op("Abs", ["x"])], axes=[1], keepdims=1)])

    assert_unprunable(pre_group(between_convs(middle)), "not exactly zero where Conv 'post' consumes")


def test_multiplying_by_a_scalar_constant_keeps_zeros():
    assert_prunable(pre_group(between_convs(lambda n, h: n.op("Mul", [h, n.const("two", np.float32(2.0))]))), 8)


# --- data movement -------------------------------------------------------------------------------

def test_concat_maps_each_input_to_its_segment():
    def middle(n, h):
        other = n.conv("x", 3, 6, name="side")
        return n.op("Concat", [h, other], axis=1)

    a = analyze_checked(between_convs(middle, c_out=14))
    pre, side = group_of(a, "pre.weight", 0), group_of(a, "side.weight", 0)
    assert pre is not side
    assert np.array_equal(slice_of(pre, "post.weight").index, column(8))
    assert np.array_equal(slice_of(side, "post.weight").index, column(6) + 8)


def test_split_maps_pieces_back_to_segments():
    def middle(n, h):
        a, b = n.op("Split", [h, n.ints("sizes", [3, 5])], outputs=2, axis=1)
        a = n.conv(a, 3, 4, name="left")
        b = n.conv(b, 5, 4, name="right")
        return n.op("Add", [a, b])

    a = analyze_checked(between_convs(middle, c_out=4))
    pieces = sorted((g for g in a.groups if any(s.name == "pre.weight" and s.axis == 0 for s in g.slices)),
                    key=lambda g: slice_of(g, "pre.weight", 0).index.min())
    assert [g.num_zigs for g in pieces] == [3, 5]
    assert np.array_equal(slice_of(pieces[0], "left.weight", 1).index, column(3))
    assert np.array_equal(slice_of(pieces[1], "pre.weight", 0).index, column(5) + 3)
    assert np.array_equal(slice_of(pieces[1], "right.weight", 1).index, column(5))
    assert all(g.prunable for g in pieces)


def test_slice_with_step_keeps_every_other_channel():
    def middle(n, h):
        return n.op("Slice", [h, n.ints("starts", [2]), n.ints("ends", [8]), n.ints("axes", [1]), n.ints("steps", [2])])

    a = analyze_checked(between_convs(middle, c_out=3))
    used = group_of(a, "post.weight", 1)
    assert_prunable(used, 3)
    assert np.array_equal(slice_of(used, "pre.weight", 0).index, [[2], [4], [6]])
    assert np.array_equal(slice_of(used, "post.weight", 1).index, column(3))
    dropped = [g for g in a.groups if g is not used and any(s.name == "pre.weight" and s.axis == 0 for s in g.slices)]
    assert sorted(int(i) for g in dropped for i in slice_of(g, "pre.weight", 0).index.ravel()) == [0, 1, 3, 5, 7]


@pytest.mark.parametrize("batch_end", [2**31 - 1, 1])
def test_slice_over_the_dynamic_batch_axis_still_couples_channels(batch_end):
    """tf2onnx writes strided slices over every axis, the symbolic batch included (magika): the batch axis
    carries no channels, so the channel axis still couples; a fixed-size piece of the batch is pinned."""
    def middle(n, h):
        bounds = [n.ints("starts", [0, 2]), n.ints("ends", [batch_end, 8]), n.ints("axes", [0, 1])]
        return n.op("Slice", [h, *bounds])

    a = analyze_checked(between_convs(middle, c_out=6))
    used = group_of(a, "post.weight", 1)
    assert_prunable(used, 6)
    assert np.array_equal(slice_of(used, "pre.weight", 0).index, column(6) + 2)


def test_spatial_zero_pad_passes_channels():
    g = pre_group(between_convs(lambda n, h: n.op("Pad", [h, n.ints("pads", [0, 0, 1, 1, 0, 0, 1, 1])])))
    assert_prunable(g, 8)


def test_pad_with_non_zero_value_blocks_pruning():
    def middle(n, h):
        return n.op("Pad", [h, n.ints("pads", [0, 0, 1, 1, 0, 0, 1, 1]), n.const("fill", np.float32(1.0))])

    assert_unprunable(pre_group(between_convs(middle)), "not exactly zero")


def test_zero_pad_on_the_channel_axis_is_a_segment_of_the_output():
    """Pad(value=0) by 1 channel before and after: input channel i is output channel 1 + i."""
    g = pre_group(between_convs(lambda n, h: n.op("Pad", [h, n.ints("pads", [0, 1, 0, 0, 0, 1, 0, 0])]), c_out=10))
    assert_prunable(g, 8)
    assert np.array_equal(slice_of(g, "post.weight", 1).index, column(8) + 1)


def test_zero_pad_of_channels_and_space_at_once_keeps_the_channel_segment():
    g = pre_group(between_convs(lambda n, h: n.op("Pad", [h, n.ints("pads", [0, 1, 1, 1, 0, 1, 1, 1])]), c_out=10))
    assert_prunable(g, 8)
    assert np.array_equal(slice_of(g, "post.weight", 1).index, column(8) + 1)


def test_zero_pad_of_the_last_axis_of_an_nhwc_tensor_is_a_channel_segment():
    """tf2onnx keeps Keras' NHWC between Transposes: the channel axis that is padded is the last one."""
    def middle(n, h):
        nhwc = n.op("Transpose", [h], perm=[0, 2, 3, 1])
        padded = n.op("Pad", [nhwc, n.ints("pads", [0, 0, 0, 2, 0, 0, 0, 2])])
        return n.op("Transpose", [padded], perm=[0, 3, 1, 2])

    g = pre_group(between_convs(middle, c_out=12))
    assert_prunable(g, 8)
    assert np.array_equal(slice_of(g, "post.weight", 1).index, column(8) + 2)


def _widened_shortcut(pads, fill=0.0, opset=17, axes=None):
    """pre (8) -> Relu -> Add(Conv 'wide' 8 -> 12, Pad(relu) to 12 channels) -> Relu -> post (12 -> 4)."""
    def middle(n, h):
        h = n.op("Relu", [h])
        inputs = [h, n.ints("pads", pads), n.const("fill", np.float32(fill))]
        shortcut = n.op("Pad", inputs + ([n.ints("axes", axes)] if axes else []))
        return n.op("Relu", [n.op("Add", [n.conv(h, 8, 12, k=1, name="wide"), shortcut])])

    return analyze_checked(between_convs(middle, c_out=12, opset=opset))


def _padding_group(analysis):
    """The group of 'wide' channels that meet the Pad's padded positions (not the input's)."""
    shortcut = group_of(analysis, "pre.weight", 0)
    [padded] = [g for g in analysis.groups if g is not shortcut and "wide.weight" in g.initializers]
    return padded


@pytest.mark.parametrize("before,after", [(0, 4), (4, 0), (1, 3)])
def test_zero_pad_positions_added_to_conv_channels_are_a_prunable_group(before, after):
    a = _widened_shortcut([0, before, 0, 0, 0, after, 0, 0])
    shortcut = group_of(a, "pre.weight", 0)
    assert_prunable(shortcut, 8)
    assert np.array_equal(slice_of(shortcut, "wide.weight", 0).index, column(8) + before)
    padded = _padding_group(a)
    assert np.array_equal(np.sort(slice_of(padded, "wide.weight", 0).index.ravel()),
                          list(range(before)) + list(range(before + 8, 12)))
    assert all(g.prunable for g in a.groups if "wide.weight" in g.initializers)
    assert np.array_equal(slice_of(padded, "post.weight", 1).index, slice_of(padded, "wide.weight", 0).index)


def test_zero_pad_with_an_axes_input_is_a_segment_too():
    a = _widened_shortcut([0, 4], opset=18, axes=[1])
    assert_prunable(group_of(a, "pre.weight", 0), 8)
    assert_prunable(_padding_group(a), 4)


def test_pad_with_a_non_zero_value_on_the_channel_axis_only_is_non_zero_in_the_padding():
    """The fill lands in the padded channels alone: the input's channels still pass as copies."""
    a = _widened_shortcut([0, 0, 0, 0, 0, 4, 0, 0], fill=1.0)
    assert_prunable(group_of(a, "pre.weight", 0), 8)
    assert_unprunable(_padding_group(a), "not exactly zero")


@pytest.mark.parametrize("mode,pads", [("reflect", [0, 1, 0, 0, 0, 1, 0, 0]), ("edge", [0, 1, 0, 0, 0, 1, 0, 0]),
                                       ("constant", [0, -1, 0, 0, 0, 1, 0, 0])])
def test_pad_that_copies_or_crops_channels_pins_the_channel_axis(mode, pads):
    """Reflect and edge padding copy input channels into the padding; negative pads crop: not segments."""
    g = pre_group(between_convs(lambda n, h: n.op("Pad", [h, n.ints("pads", pads)], mode=mode), c_out=8 + sum(pads)))
    assert_unprunable(g, "padded by Pad")


def test_spatial_zero_pad_stays_pinned_where_a_kernel_reads_it():
    """A parameter along a padded spatial axis (a learned position gain) is no group: Conv slides over it."""
    def middle(n, h):
        padded = n.op("Pad", [h, n.ints("pads", [0, 0, 1, 1, 0, 0, 1, 1])])
        return n.op("Mul", [padded, n.weight("position", (1, 1, 10, 10))])

    a = analyze_checked(between_convs(middle))
    assert_prunable(group_of(a, "pre.weight", 0), 8)
    for axis in (2, 3):
        assert_unprunable(group_of(a, "position", axis), "spatial axis of Conv")


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("GlobalAveragePool", {}),
    ("GlobalMaxPool", {}),
])
def test_pooling_keeps_channels(op, attrs):
    assert_prunable(pre_group(between_convs(_unary(op, **attrs))), 8)


def test_reduce_sum_over_channels_is_prunable():
    g = pre_group(between_convs(lambda n, h: n.op("ReduceSum", [h, n.ints("axes", [1])], keepdims=1), c_out=1))
    assert_prunable(g, 8)
    assert set(roles(g)) == {("pre.weight", 0), ("pre.bias", 0)}


def test_reduce_mean_over_channels_is_not():
    g = pre_group(between_convs(lambda n, h: n.op("ReduceMean", [h], axes=[1], keepdims=1), c_out=1))
    assert_unprunable(g, "reduced over by ReduceMean")


def test_reduce_mean_over_space_keeps_channels():
    g = pre_group(between_convs(lambda n, h: n.op("ReduceMean", [h], axes=[2, 3], keepdims=1)))
    assert_prunable(g, 8)


def _flatten_head(flatten):
    """x -> conv 'pre' (3 -> 4) -> MaxPool to 2x2 -> flatten(net, h) -> Gemm 'fc' (16 -> 5) -> y."""
    n = Net()
    h = n.conv(n.input(shape=("N", 3, 8, 8)), 3, 4, name="pre")
    h = flatten(n, n.op("MaxPool", [h], kernel_shape=[4, 4], strides=[4, 4]))
    n.op("Gemm", [h, n.weight("fc.weight", (5, 16)), n.weight("fc.bias", (5,))], outputs=["y"], transB=1)
    return analyze_checked(n.model("y"))


FLATTEN_BLOCKS = np.arange(16).reshape(4, 4)  # channel c -> features [4c, 4c + 4)


def test_flatten_maps_a_channel_to_a_block_of_h_times_w():
    g = group_of(_flatten_head(lambda n, h: n.op("Flatten", [h])), "pre.weight", 0)
    assert_prunable(g, 4)
    assert np.array_equal(slice_of(g, "fc.weight", 1).index, FLATTEN_BLOCKS)


def test_reshape_0_minus_1_is_a_flatten():
    g = group_of(_flatten_head(lambda n, h: n.op("Reshape", [h, n.ints("shape", [0, -1])])), "pre.weight", 0)
    assert_prunable(g, 4)
    assert np.array_equal(slice_of(g, "fc.weight", 1).index, FLATTEN_BLOCKS)


def test_reshape_minus_1_chw_is_a_flatten():
    g = group_of(_flatten_head(lambda n, h: n.op("Reshape", [h, n.ints("shape", [-1, 16])])), "pre.weight", 0)
    assert_prunable(g, 4)
    assert np.array_equal(slice_of(g, "fc.weight", 1).index, FLATTEN_BLOCKS)


def test_reshape_to_a_runtime_batch_and_minus_1_is_a_flatten():
    def flatten(n, h):
        batch = n.op("Unsqueeze", [n.op("Gather", [n.op("Shape", [h]), n.ints("zero", 0)], axis=0), n.ints("ax0", [0])])
        return n.op("Reshape", [h, n.op("Concat", [batch, n.ints("minus1", [-1])], axis=0)])

    g = group_of(_flatten_head(flatten), "pre.weight", 0)
    assert_prunable(g, 4)
    assert np.array_equal(slice_of(g, "fc.weight", 1).index, FLATTEN_BLOCKS)


def test_flatten_after_nhwc_transpose_maps_a_channel_to_a_strided_set():
    def flatten(n, h):
        return n.op("Reshape", [n.op("Transpose", [h], perm=[0, 2, 3, 1]), n.ints("shape", [0, -1])])

    g = group_of(_flatten_head(flatten), "pre.weight", 0)
    assert_prunable(g, 4)
    assert np.array_equal(slice_of(g, "fc.weight", 1).index, np.arange(16).reshape(4, 4).T)


def test_squeeze_and_unsqueeze_keep_channels():
    def flatten(n, h):
        h = n.op("Squeeze", [n.op("GlobalAveragePool", [h]), n.ints("axes", [2, 3])])  # (N, 4)
        h = n.op("Unsqueeze", [h, n.ints("axes1", [2])])  # (N, 4, 1)
        h = n.op("Reshape", [h, n.ints("shape", [0, 4])])
        return n.op("Concat", [h, h, h, h], axis=1)  # (N, 16): channel c at c, c+4, c+8, c+12

    g = group_of(_flatten_head(flatten), "pre.weight", 0)
    assert_prunable(g, 4)
    assert np.array_equal(slice_of(g, "fc.weight", 1).index, np.arange(16).reshape(4, 4).T)


HEADS, HEAD_DIM, SEQ, WIDTH = 4, 3, 5, 12


def _attention():
    """Self-attention, 4 heads of 3: project, split heads with Reshape, attend, merge heads, project."""
    n = Net()
    x = n.input(shape=("N", SEQ, WIDTH))

    def heads(name):
        h = n.op("MatMul", [x, n.weight(f"{name}.weight", (WIDTH, WIDTH))])
        h = n.op("Add", [h, n.weight(f"{name}.bias", (WIDTH,), scale=0.1)])
        h = n.op("Reshape", [h, n.ints(f"{name}.split", [0, 0, HEADS, HEAD_DIM])])
        return n.op("Transpose", [h], perm=[0, 2, 1, 3])  # (N, heads, S, d)

    q, k, v = heads("q"), heads("k"), heads("v")
    scores = n.op("MatMul", [q, n.op("Transpose", [k], perm=[0, 1, 3, 2])])
    probs = n.op("Softmax", [n.op("Mul", [scores, n.const("scale", np.float32(HEAD_DIM ** -0.5))])], axis=-1)
    h = n.op("Transpose", [n.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    h = n.op("Reshape", [h, n.ints("merge", [0, 0, WIDTH])])
    n.op("MatMul", [h, n.weight("out.weight", (WIDTH, 6))], outputs=["y"])
    return n.model("y")


def test_attention_heads_are_blocks_of_head_dim():
    a = analyze_checked(_attention())
    g = group_of(a, "v.weight", 1)
    assert_prunable(g, HEADS)
    blocks = np.arange(WIDTH).reshape(HEADS, HEAD_DIM)
    for name, axis in (("q.weight", 1), ("k.weight", 1), ("v.weight", 1), ("v.bias", 0)):
        assert np.array_equal(slice_of(g, name, axis).index, blocks), name
    assert roles(g)[("out.weight", 0)] == "consumer"
    assert np.array_equal(slice_of(g, "out.weight", 0).index, blocks)


def test_transpose_permutes_axes():
    def middle(n, h):
        h = n.op("Relu", [n.op("Transpose", [h], perm=[0, 2, 3, 1])])
        return n.op("Transpose", [h], perm=[0, 3, 1, 2])

    assert_prunable(pre_group(between_convs(middle)), 8)


def test_resize_keeps_channels():
    def middle(n, h):
        return n.op("Resize", [h, "", n.const("scales", np.array([1, 1, 2, 2], np.float32))], mode="nearest")

    assert_prunable(pre_group(between_convs(middle)), 8)


def test_softmax_over_channels_is_a_normalization():
    assert_unprunable(pre_group(between_convs(_unary("Softmax", axis=1))), "normalized over by Softmax")


def test_softmax_over_space_is_not_zero_preserving():
    assert_unprunable(pre_group(between_convs(_unary("Softmax", axis=-1))), "not exactly zero")


def test_gather_embedding_columns_are_prunable_rows_are_not():
    n = Net()
    ids = n.input("ids", ("N", SEQ), dtype=INT64)
    h = n.op("Gather", [n.weight("embed", (10, 8)), ids], axis=0)  # (N, S, 8)
    n.op("MatMul", [n.op("Relu", [h]), n.weight("w", (8, 4))], outputs=["y"])
    a = analyze_checked(n.model("y"))
    g = group_of(a, "embed", 1)
    assert_prunable(g, 8)
    assert roles(g) == {("embed", 1): "producer", ("w", 0): "consumer"}
    assert_unprunable(group_of(a, "embed", 0), "selects along this axis")


def test_identity_and_dropout_are_transparent():
    def middle(n, h):
        return n.op("Dropout", [n.op("Identity", [h])])

    a = analyze_checked(between_convs(middle))
    assert not any(node.op_type in ("Identity", "Dropout") for node in a.model.graph.node)
    assert_prunable(group_of(a, "pre.weight", 0), 8)


def test_cast_through_float16_keeps_channels():
    def middle(n, h):
        h = n.op("Relu", [n.op("Cast", [h], to=10)])  # FLOAT16
        return n.op("Cast", [h], to=FLOAT)

    assert_prunable(pre_group(between_convs(middle)), 8)


def test_unknown_custom_op_is_a_barrier():
    def middle(n, h):
        return n.op("Foo", [h], name="foo", domain="com.example")

    proto = between_convs(middle)
    proto.graph.value_info.append(__import__("onnx").helper.make_tensor_value_info("foo", FLOAT, ["N", 8, 8, 8]))
    a = analyze_proto(proto)
    assert_unprunable(group_of(a, "pre.weight", 0), "no rule for com.example.Foo")
    assert_unprunable(group_of(a, "post.weight", 1), "no rule for com.example.Foo")


def test_standard_op_without_a_rule_is_a_barrier():
    g = pre_group(between_convs(_unary("DepthToSpace", blocksize=2), c_out=2, hw=8))
    assert_unprunable(g, "no rule for DepthToSpace")


# --- the hand-built edge models ------------------------------------------------------------------

def load_edge(name):
    from onnxoto.graph import load
    from onnxoto.groups import analyze

    return analyze(load(os.path.join(MODELS, f"edge_{name}.onnx")))


RUNNABLE_EDGES = ["constant_weights", "nhwc", "bn_unfolded", "flatten_gemm", "reshape_matmul", "gemm_trans",
                  "depthwise_grouped", "slice_split_concat", "sigmoid_gate", "shared_zero_bias", "tied_weight"]


@pytest.mark.parametrize("name", RUNNABLE_EDGES)
def test_edge_model_groups_are_zero_invariant(name):
    a = load_edge(name)
    assert a.prunable, "every edge model has something to prune"
    assert check_zero_invariance(a, trials=3) == len(a.prunable)


def test_edge_constant_weights_become_parameters():
    a = load_edge("constant_weights")
    assert not any(node.op_type == "Constant" for node in a.model.graph.node)
    assert_prunable(group_of(a, "conv1.weight", 0), 8)
    assert roles(group_of(a, "conv2.weight", 0))[("fc.weight", 1)] == "consumer"


def test_edge_nhwc_sandwich_keeps_residual_convs_together():
    a = load_edge("nhwc")
    g = group_of(a, "conv1.weight", 0)
    assert_prunable(g, 8)
    assert roles(g)[("conv2.weight", 0)] == "producer" and roles(g)[("conv3.weight", 1)] == "consumer"


def test_edge_unfolded_batch_norm():
    g = group_of(load_edge("bn_unfolded"), "conv1.weight", 0)
    assert_prunable(g, 8)
    assert roles(g)[("bn1.scale", 0)] == "producer" and roles(g)[("bn1.shift", 0)] == "producer"


def test_edge_flatten_gemm_blocks():
    g = group_of(load_edge("flatten_gemm"), "conv1.weight", 0)
    assert np.array_equal(slice_of(g, "fc1.weight", 1).index, np.arange(64).reshape(4, 16))


def test_edge_reshape_0_minus_1_then_matmul():
    g = group_of(load_edge("reshape_matmul"), "conv1.weight", 0)
    assert_prunable(g, 4)
    assert np.array_equal(slice_of(g, "fc1.weight", 0).index, np.arange(64).reshape(4, 16))


def test_edge_reshape_minus_1_chw_then_matmul():
    g = group_of(load_edge("reshape_matmul"), "conv2.weight", 0)
    assert_prunable(g, 4)
    assert np.array_equal(slice_of(g, "fc2.weight", 0).index, np.arange(64).reshape(4, 16))


def test_edge_gemm_trans():
    a = load_edge("gemm_trans")
    assert roles(group_of(a, "fc_t1.weight", 0))[("fc_t0.weight", 0)] == "consumer"
    assert roles(group_of(a, "fc_t0.weight", 1))[("head.weight", 1)] == "consumer"


def test_edge_depthwise_and_grouped():
    a = load_edge("depthwise_grouped")
    assert roles(group_of(a, "conv1.weight", 0))[("dw.weight", 0)] == "producer"
    g = group_of(a, "grouped.weight", 0)
    assert g.num_zigs == 2 and slice_of(g, "grouped.weight", 0).index.shape == (2, 4)


def test_edge_slice_split_concat_segments():
    a = load_edge("slice_split_concat")
    total = sum(g.num_zigs for g in a.groups for s in g.slices if s.name == "conv1.weight" and s.axis == 0)
    assert total == 10
    consumed = group_of(a, "conv_out.weight", 1)  # concat channels 1..6 -> conv_out inputs 0..5
    assert sorted(slice_of(consumed, "conv_out.weight", 1).index.ravel().tolist()) == [0, 1]


def test_edge_sigmoid_blocks_gate_does_not():
    a = load_edge("sigmoid_gate")
    assert_unprunable(group_of(a, "conv1.weight", 0), "Conv 'conv2' reads them with padding")
    gate = group_of(a, "conv2.weight", 0)
    assert_prunable(gate, 8)
    assert roles(gate)[("se_expand.weight", 0)] == "producer" and roles(gate)[("se_reduce.weight", 1)] == "consumer"


def test_edge_custom_op_barrier():
    a = load_edge("custom_op")
    assert_unprunable(group_of(a, "conv1.weight", 0), "no rule for com.example.Foo")


def test_edge_shared_zero_bias_does_not_couple_layers():
    a = load_edge("shared_zero_bias")
    assert group_of(a, "conv1.weight", 0) is not group_of(a, "conv2.weight", 0)
    assert_prunable(group_of(a, "conv1.weight", 0), 8)
    assert_prunable(group_of(a, "conv2.weight", 0), 8)


def test_edge_tied_weight_keeps_both_places_coupled():
    a = load_edge("tied_weight")
    g = group_of(a, "conv1.weight", 0)
    assert group_of(a, "conv2.weight", 0) is g and roles(g)[("tied.weight", 0)] == "consumer"
    out = group_of(a, "tied.weight", 1)
    assert np.array_equal(slice_of(out, "head.weight", 0).index, np.stack([np.arange(6), np.arange(6) + 6], 1))


# --- the check itself ----------------------------------------------------------------------------

def test_zero_invariance_check_catches_a_missing_producer():
    """Drop the bias from a group's producers: its channels are no longer zero where 'post' consumes them."""
    import dataclasses

    from edge_helpers import check_group

    a = analyze_proto(between_convs(lambda n, h: n.op("Relu", [h])))
    g = group_of(a, "pre.weight", 0)
    broken = dataclasses.replace(g, slices=[s for s in g.slices if s.name != "pre.bias"])
    with pytest.raises(AssertionError, match="consumes non-zero channels"):
        check_group(a, broken, np.array([0, 3]))


# --- the rest of the operator table (onnxoto.ops.SPECS): each op in a small graph ---------------------------

@pytest.mark.parametrize("op, make", [
    ("Selu", lambda n, h: n.op("Selu", [h])),
    ("Celu", lambda n, h: n.op("Celu", [h])),
    ("Mish", lambda n, h: n.op("Mish", [h])),
    ("Sign", lambda n, h: n.op("Sign", [h])),
    ("Sin", lambda n, h: n.op("Sin", [h])),
    ("Floor", lambda n, h: n.op("Floor", [h])),
    ("Ceil", lambda n, h: n.op("Ceil", [h])),
    ("Round", lambda n, h: n.op("Round", [h])),
    ("Sqrt", lambda n, h: n.op("Sqrt", [n.op("Abs", [h])])),
    ("Softsign", lambda n, h: n.op("Softsign", [h])),
    ("ThresholdedRelu", lambda n, h: n.op("ThresholdedRelu", [h], alpha=0.1)),
    ("Atan", lambda n, h: n.op("Atan", [h])),
    ("Asin", lambda n, h: n.op("Asin", [n.op("Tanh", [h])])),
    ("Sinh", lambda n, h: n.op("Sinh", [h])),
    ("Tan", lambda n, h: n.op("Tan", [n.op("Tanh", [h])])),
    ("Asinh", lambda n, h: n.op("Asinh", [h])),
    ("Atanh", lambda n, h: n.op("Atanh", [n.op("Mul", [n.op("Tanh", [h]), n.const("half", np.float32(0.5))])])),
    ("Pow", lambda n, h: n.op("Pow", [h, n.const("two", np.float32(2.0))])),
    ("Max", lambda n, h: n.op("Max", [h, n.const("zero", np.float32(0.0))])),
    ("Min", lambda n, h: n.op("Min", [h, n.const("six", np.float32(6.0))])),
])
def test_more_zero_preserving_ops_pass_channels(op, make):
    assert_prunable(pre_group(between_convs(make, opset=18 if op == "Mish" else 17)), 8)


@pytest.mark.parametrize("op, make", [
    ("Log", lambda n, h: n.op("Log", [n.op("Abs", [h])])),
    ("Reciprocal", lambda n, h: n.op("Reciprocal", [h])),
    ("Cosh", lambda n, h: n.op("Cosh", [h])),
    ("Acos", lambda n, h: n.op("Acos", [n.op("Tanh", [h])])),
    ("Acosh", lambda n, h: n.op("Acosh", [n.op("Add", [n.op("Abs", [h]), n.const("one", np.float32(1.0))])])),
    ("Pow", lambda n, h: n.op("Pow", [h, n.const("zero", np.float32(0.0))])),  # 0^0 = 1
    ("Max", lambda n, h: n.op("Max", [h, n.const("half", np.float32(0.5))])),
    ("Min", lambda n, h: n.op("Min", [h, n.const("minus", np.float32(-1.0))])),
])
def test_more_ops_that_make_zeros_non_zero_block_pruning(op, make):
    assert_unprunable(pre_group(between_convs(make, post_k=3)), "not zero")
    if op in ("Log", "Reciprocal"):  # log(0) = -inf, 1/0 = inf: no bias takes that
        assert_unprunable(pre_group(between_convs(make), run_check=False), "a constant that is not finite")
    else:
        assert_folded(pre_group(between_convs(make)))


def test_mean_of_two_branches_couples_both():
    a = analyze_checked(between_convs(_two_convs_into("Mean")))
    assert group_of(a, "side.weight", 0) is group_of(a, "pre.weight", 0)
    assert_prunable(group_of(a, "pre.weight", 0), 8)


def test_where_with_a_negated_mask_couples_both_branches():
    """Where(Not(mask), a, b): the condition (bool, no channels) selects; a channel is zero where both are."""
    def middle(n, h):
        mask = n.input("mask", shape=("N", 1, 8, 8), dtype=onnx.TensorProto.BOOL)
        return n.op("Where", [n.op("Not", [mask]), h, n.conv("x", 3, 8, name="side")])

    a = analyze_checked(between_convs(middle))
    assert group_of(a, "side.weight", 0) is group_of(a, "pre.weight", 0)
    assert_prunable(group_of(a, "pre.weight", 0), 8)


def test_conv_without_bias_couples_its_weight_alone():
    n = Net()
    h = n.op("Conv", [n.input(shape=("N", 3, 8, 8)), n.weight("pre.weight", (8, 3, 3, 3))], name="pre",
             kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    n.op("Conv", [n.op("Relu", [h]), n.weight("post.weight", (4, 8, 1, 1))], outputs=["y"], kernel_shape=[1, 1])
    g = pre_group(n.model("y"))
    assert_prunable(g, 8)
    assert roles(g) == {("pre.weight", 0): "producer", ("post.weight", 1): "consumer"}


def test_lrn_normalizes_channels_together():
    g = pre_group(between_convs(lambda n, h: n.op("LRN", [h], size=3)), run_check=False)
    assert_unprunable(g, "normalized together by LRN")


def test_log_softmax_over_channels_is_a_normalization():
    g = pre_group(between_convs(lambda n, h: n.op("LogSoftmax", [h], axis=1)), run_check=False)
    assert_unprunable(g, "normalized over by LogSoftmax")


@pytest.mark.parametrize("op, attrs", [("LpPool", {"kernel_shape": [2, 2], "strides": [2, 2], "p": 2}),
                                       ("GlobalLpPool", {"p": 2})])
def test_lp_pooling_keeps_channels(op, attrs):
    assert_prunable(pre_group(between_convs(_unary(op, **attrs))), 8)


@pytest.mark.parametrize("op", ["ReduceL1", "ReduceL2", "ReduceSumSquare"])
def test_sum_like_reductions_over_channels_are_prunable(op):
    g = pre_group(between_convs(lambda n, h: n.op(op, [h], axes=[1], keepdims=1), c_out=1))
    assert_prunable(g, 8)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin", "ReduceProd"])
def test_reductions_over_space_keep_channels(op):
    assert_prunable(pre_group(between_convs(lambda n, h: n.op(op, [h], axes=[2, 3], keepdims=1))), 8)


@pytest.mark.parametrize("op", ["ReduceLogSumExp", "ReduceLogSum"])
def test_log_reductions_of_zeros_are_not_zero(op):
    """log-sum-exp of a zero channel is log(H*W), log-sum of it is -inf: zeros do not survive."""
    def middle(n, h):
        return n.op(op, [n.op("Abs", [h])], axes=[2, 3], keepdims=1)

    assert_unprunable(pre_group(between_convs(middle)), "not exactly zero")


def test_upsample_keeps_channels():
    def middle(n, h):
        return n.op("Upsample", [h, n.const("scales", np.array([1, 1, 2, 2], np.float32))], mode="nearest")

    assert_prunable(pre_group(between_convs(middle, opset=9)), 8)


def test_expand_and_tile_keep_channels():
    def middle(n, h):
        pooled = n.op("GlobalAveragePool", [h])  # (N, 8, 1, 1)
        wide = n.op("Expand", [pooled, n.ints("shape", [1, 1, 4, 4])])  # (N, 8, 4, 4)
        return n.op("Tile", [wide, n.ints("repeats", [1, 1, 2, 2])])  # (N, 8, 8, 8)

    assert_prunable(pre_group(between_convs(middle)), 8)


def test_shape_arithmetic_couples_nothing():
    """ConstantOfShape(Shape(h)) ones scale h; Size, Range and NonZero make an integer output: none of
    them pins the channels."""
    n = Net()
    h = n.conv(n.input(shape=("N", 3, 8, 8)), 3, 8, name="pre")
    ones = n.op("ConstantOfShape", [n.op("Shape", [h])], value=onnx.helper.make_tensor("one", FLOAT, [1], [1.0]))
    h = n.op("Mul", [h, ones])
    n.op("Conv", [h, n.weight("post.weight", (4, 8, 1, 1))], outputs=["y"], kernel_shape=[1, 1])
    count = n.op("NonZero", [n.op("Range", [n.ints("start", 0), n.op("Size", [h]), n.ints("step", 1)])])
    proto = n.model("y")
    proto.graph.output.append(onnx.helper.make_tensor_value_info(count, INT64, None))
    assert_prunable(pre_group(proto), 8)
