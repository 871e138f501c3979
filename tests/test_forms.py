"""Training forms: each rewrite computes exactly what the operator it replaces computes, its
gradients match finite differences of the original model, and every zoo model trains after it."""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxoto.train import TrainingSession
from onnxoto.train.forms import REWRITES, ParamMap, to_trainable
from onnxoto.train.forms.param_map import ConvTransposeLayout

REPO = Path(__file__).resolve().parents[1]
C, H, W = 4, 6, 8


def upstream_model(op_nodes, opset=17, extra=None, channels=C, scale=1 / 3, spatial=(H, W)):
    """x (N, C, H, W) -> Conv 3x3 with parameter `w` -> `op_nodes` (reading `c`, writing `y`).
    spatial: the declared H and W (symbols keep them dynamic)."""
    rng = np.random.default_rng(0)
    weights = {"w": (rng.standard_normal((channels, C, 3, 3)) * scale).astype(np.float32), **(extra or {})}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), *op_nodes]
    graph = helper.make_graph(nodes, "case", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, *spatial])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def ints(name, values):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, np.int64), name))


def floats(name, values):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, np.float32), name))


def node(op, inputs=("c",), **attributes):
    return helper.make_node(op, list(inputs), ["y"], **attributes)


rng = np.random.default_rng(1)
CASES = {
    "relu": (upstream_model([node("Relu")]), "Relu"),
    "hard_sigmoid": (upstream_model([node("HardSigmoid", alpha=0.3, beta=0.4)]), "HardSigmoid"),
    # Smaller pre-activations: fewer values near the kinks at +-3, where differences jump.
    "hard_swish": (upstream_model([node("HardSwish")], scale=0.1), "HardSwish"),
    "global_max_pool": (upstream_model([node("GlobalMaxPool")]), "GlobalMaxPool"),
    # Caffe2's joins and means: the conv's output with a function of it
    "sum": (upstream_model([helper.make_node("Sigmoid", ["c"], ["r"]), node("Sum", ["c", "r", "c"])]), "Sum"),
    "mean": (upstream_model([helper.make_node("Sigmoid", ["c"], ["r"]), node("Mean", ["c", "r"])]), "Mean"),
    **{f"lrn_size{n}": (upstream_model([node("LRN", size=n, alpha=0.5, beta=0.75, bias=2.0)]), "LRN") for n in (3, 5)},
    # a slope per channel (trained too), and one shared
    "prelu_channels": (upstream_model([node("PRelu", ["c", "slope"])], extra={"slope": np.linspace(
        -0.5, 0.5, C, dtype=np.float32).reshape(C, 1, 1)}), "PRelu"),
    "prelu_shared": (upstream_model([node("PRelu", ["c", "slope"])], extra={"slope": np.array([0.25], np.float32)}),
                     "PRelu"),
    "reduce_max_spatial": (upstream_model([node("ReduceMax", axes=[2, 3])]), "ReduceMax"),
    "reduce_max_spatial_flat": (upstream_model([node("ReduceMax", axes=[-1, -2], keepdims=0)]), "ReduceMax"),
    "reduce_max_channels": (upstream_model([node("ReduceMax", axes=[1], keepdims=0)]), "ReduceMax"),
    # over the batch and symbolic sizes (a mel front end's global max): TopK instead of MaxPool
    "reduce_max_all_symbolic": (upstream_model([node("ReduceMax")], spatial=("H", "W")), "ReduceMax"),
    "reduce_max_spatial_symbolic_flat": (upstream_model([node("ReduceMax", axes=[2, 3], keepdims=0)],
                                                        spatial=("H", "W")), "ReduceMax"),
    "reduce_max_axes_input": (upstream_model([ints("axes", [3]), node("ReduceMax", ["c", "axes"])], opset=18), "ReduceMax"),
    "resize_nearest_x2": (upstream_model([floats("s", [1, 1, 2, 2]), node("Resize", ["c", "", "s"], mode="nearest")]), "Resize"),
    "resize_nearest_asym_x3": (upstream_model([floats("s", [1, 1, 3, 2]), node(
        "Resize", ["c", "", "s"], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")]), "Resize"),
    "resize_nearest_sizes": (upstream_model([ints("z", [9, 12]), node("Resize", ["c", "", "", "z"], mode="nearest",
                                                                       axes=[2, 3])], opset=18), "Resize"),
    # symbolic H and W (a detector exported with dynamic axes): replication with sizes read at run time
    "resize_nearest_x2_symbolic": (upstream_model([floats("s", [1, 1, 2, 2]), node("Resize", ["c", "", "s"], mode="nearest")],
                                                  spatial=("H", "W")), "Resize"),
    "resize_nearest_asym_x3_symbolic": (upstream_model([floats("s", [1, 1, 3, 2]), node(
        "Resize", ["c", "", "s"], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
        spatial=("H", "W")), "Resize"),
    "resize_nearest_asym_round": (upstream_model([floats("s", [1, 1, 2, 2]), node(
        "Resize", ["c", "", "s"], mode="nearest", coordinate_transformation_mode="asymmetric")]), "Resize"),
    **{f"resize_linear_{mode}": (upstream_model([floats("s", [1, 1, 2, 2]), node(
        "Resize", ["c", "", "s"], mode="linear", coordinate_transformation_mode=mode)]), "Resize")
       for mode in ("half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel")},
    "resize_linear_sizes_down": (upstream_model([ints("z", [4, 5]), node(
        "Resize", ["c", "", "", "z"], mode="linear", coordinate_transformation_mode="align_corners", axes=[2, 3])],
        opset=18), "Resize"),
    "depth_to_space_dcr": (upstream_model([node("DepthToSpace", blocksize=2, mode="DCR")], channels=8), "DepthToSpace"),
    "depth_to_space_crd": (upstream_model([node("DepthToSpace", blocksize=2, mode="CRD")], channels=8), "DepthToSpace"),
    "space_to_depth": (upstream_model([node("SpaceToDepth", blocksize=2)]), "SpaceToDepth"),
    "slice_reversed": (upstream_model([ints("b", [-1]), ints("e", [-(2 ** 62)]), ints("a", [3]), ints("st", [-1]),
                                       node("Slice", ["c", "b", "e", "a", "st"])]), "Slice"),
    "slice_mixed_steps": (upstream_model([ints("b", [1, 5]), ints("e", [6, 0]), ints("a", [2, 3]), ints("st", [2, -2]),
                                          node("Slice", ["c", "b", "e", "a", "st"])]), "Gather"),
    **{f"pad_{mode}": (upstream_model([ints("p", [0, 0, 2, 1, 0, 0, 1, 3]), node("Pad", ["c", "p"], mode=mode)],
                                      opset=19 if mode == "wrap" else 17), "Pad")
       for mode in ("reflect", "edge", "wrap")},
    "avg_pool_k2s2": (upstream_model([node("AveragePool", kernel_shape=[2, 2], strides=[2, 2])]), "AveragePool"),
    "avg_pool_excl_pad": (upstream_model([node("AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1])]), "AveragePool"),
    "avg_pool_incl_pad": (upstream_model([node("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 2],
                                              count_include_pad=1)]), "AveragePool"),
}
CONV_TRANSPOSE = {  # (Cout/g, group, attributes)
    "k2_s2": (3, 1, dict(kernel_shape=[2, 2], strides=[2, 2])),
    "k3_s2_p1_op1": (3, 1, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
    "k4_s2_p1_dil2": (2, 1, dict(kernel_shape=[4, 4], strides=[2, 2], pads=[1, 2, 1, 0], dilations=[2, 1])),
    "k3_big_pads": (2, 1, dict(kernel_shape=[3, 3], strides=[1, 3], pads=[3, 0, 2, 3])),
    "group2": (3, 2, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], group=2)),
    "same_upper": (2, 1, dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    "output_shape": (2, 1, dict(kernel_shape=[3, 3], strides=[2, 2], output_shape=[13, 16])),
}


def recurrent_model(op, direction, outputs=("y",), hidden=5, spatial=(H, W), **attributes):
    """Conv -> the W axis as time (T, N, C*H) -> an LSTM or GRU over it; `outputs`: its Y, Y_h, ... names."""
    gates, directions = {"LSTM": 4, "GRU": 3}[op], 2 if direction == "bidirectional" else 1
    r = np.random.default_rng(5)
    weights = {"lw": r.standard_normal((directions, gates * hidden, C * H)).astype(np.float32) / 4,
               "lr": r.standard_normal((directions, gates * hidden, hidden)).astype(np.float32) / 2,
               "lb": r.standard_normal((directions, 2 * gates * hidden)).astype(np.float32) / 2}
    nodes = [helper.make_node("Transpose", ["c"], ["t"], perm=[3, 0, 1, 2]), ints("to_sequence", [0, 0, -1]),
             helper.make_node("Reshape", ["t", "to_sequence"], ["s"]),
             helper.make_node(op, ["s", "lw", "lr", "lb"], list(outputs), direction=direction, hidden_size=hidden,
                              **attributes)]
    return upstream_model(nodes, extra=weights, spatial=spatial)


CASES.update({
    "lstm_bidirectional": (recurrent_model("LSTM", "bidirectional"), "LSTM"),
    "lstm_reverse": (recurrent_model("LSTM", "reverse"), "LSTM"),
    "lstm_bidirectional_last_state": (recurrent_model("LSTM", "bidirectional", outputs=("", "", "y")), "LSTM"),
    # time from a symbolic width: its reversal is a Range over the length read at run time
    "lstm_bidirectional_symbolic_time": (recurrent_model("LSTM", "bidirectional", spatial=(H, "W")), "LSTM"),
    "lstm_bidirectional_activations_named": (recurrent_model("LSTM", "bidirectional", activations=[
        "Sigmoid", "Tanh", "Tanh"] * 2), "LSTM"),
    # forward, but without the optional inputs listed: the gradient builder needs them all
    "lstm_forward_short_inputs": (recurrent_model("LSTM", "forward"), "LSTM"),
    "gru_forward_short_inputs": (recurrent_model("GRU", "forward"), "GRU"),
    "gru_bidirectional": (recurrent_model("GRU", "bidirectional", linear_before_reset=1), "GRU"),
    "gru_reverse_state": (recurrent_model("GRU", "reverse", outputs=("", "y")), "GRU"),
})
for name, (cout_g, group, attributes) in CONV_TRANSPOSE.items():
    weight = {"wt": rng.standard_normal((C, cout_g, *attributes["kernel_shape"])).astype(np.float32) / 3,
              "bt": rng.standard_normal(cout_g * group).astype(np.float32)}
    CASES[f"conv_transpose_{name}"] = (upstream_model([node("ConvTranspose", ["c", "wt", "bt"], **attributes)], extra=weight),
                                       "ConvTranspose")


def run(model, x):
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def inputs(batch=2):
    return np.random.default_rng(2).standard_normal((batch, C, H, W)).astype(np.float32)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rewrite_computes_the_same(case):
    model, op = CASES[case]
    trainable, param_map = to_trainable(model)
    assert not param_map.kept and sum(param_map.rewritten.values()) == 1, param_map.kept
    onnx.checker.check_model(trainable)
    for x in (inputs(), inputs(3)):
        expected, got = run(model, x), run(trainable, x)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())


def mse(model, x, target, weights):
    """mean((y - target)^2) in float64 over the float32 model with `weights` replaced."""
    patched = onnx.ModelProto()
    patched.CopyFrom(model)
    for init in patched.graph.initializer:
        if init.name in weights:
            init.CopyFrom(numpy_helper.from_array(weights[init.name].astype(np.float32), init.name))
    return float(np.mean((run(patched, x).astype(np.float64) - target) ** 2))


def directional_derivative(model, x, target, name, direction, eps=2e-4):
    base = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name)).astype(np.float64)
    up = mse(model, x, target, {name: base + eps * direction})
    down = mse(model, x, target, {name: base - eps * direction})
    return (up - down) / (2 * eps)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rewrite_gradients_match_finite_differences(case, tmp_path):
    """Gradients of the rewritten graph in onnxruntime-training against central differences of
    the original graph, along random directions (for ConvTranspose also of its own weight)."""
    model, _ = CASES[case]
    trainable, param_map = to_trainable(model)
    x = inputs()
    target = np.random.default_rng(3).standard_normal(run(model, x).shape).astype(np.float32)
    with TrainingSession(trainable, "mse", workdir=tmp_path) as session:
        session.train_step({"x": x}, target)
        grads = {name: session.grads[name].astype(np.float64) for name in session.grads}
    checked = ["w"] + [name for name in ("wt", "lw", "lr", "slope") if name in {i.name for i in model.graph.initializer}]
    directions = np.random.default_rng(4)
    for original in checked:
        name, grad = param_map.to_original(param_map.training_name(original), grads[param_map.training_name(original)])
        assert name == original
        for _ in range(2):
            direction = directions.standard_normal(grad.shape)
            numeric = directional_derivative(model, x, target.astype(np.float64), original, direction)
            analytic = float(np.sum(grad * direction))
            assert abs(analytic - numeric) <= 1e-2 * max(abs(numeric), 1e-3), (original, analytic, numeric)


def test_conv_transpose_layout_round_trips_and_maps_channels():
    for group in (1, 2):
        layout = ConvTransposeLayout("wt", "wt_as_conv", group)
        weight = np.random.default_rng(5).standard_normal((4, 3, 2, 5))
        conv = layout.from_original(weight)
        assert conv.shape == (3 * group, 4 // group, 2, 5)
        np.testing.assert_array_equal(layout.to_original(conv), weight)
    param_map = ParamMap()
    param_map.add(ConvTransposeLayout("wt", "wt_as_conv", 1))
    weight = np.arange(4 * 3 * 2 * 2, dtype=float).reshape(4, 3, 2, 2)
    name, conv = param_map.from_original("wt", weight)
    assert name == "wt_as_conv"
    # Output channel 1 of ConvTranspose (W[:, 1]) is row 1 of the Conv weight, flipped.
    trained, axis, channels = param_map.index_to_training("wt", 1, [1])
    assert (trained, axis, list(channels)) == ("wt_as_conv", 0, [1])
    np.testing.assert_array_equal(conv[1], np.flip(weight[:, 1], (1, 2)))
    assert param_map.to_original("other", weight)[0] == "other"


@pytest.mark.parametrize("op, attributes, reason", [
    ("LSTM", dict(activations=["Sigmoid", "Tanh", "Tanh", "HardSigmoid", "Tanh", "Relu"]), "default activations"),
    ("LSTM", dict(clip=3.0), "clip"), ("LSTM", dict(input_forget=1), "input_forget"), ("GRU", dict(clip=3.0), "clip")])
def test_recurrent_kernel_limits_are_named_before_training(op, attributes, reason):
    """What LSTMGrad/GRUGrad refuse only when a session starts is kept, with the reason, so prune refuses it
    in one line before training (train.forms.untrainable_operator)."""
    model = recurrent_model(op, "bidirectional", **attributes)
    trainable, param_map = to_trainable(model)
    assert [k[1] for k in param_map.kept] == [op] and reason in param_map.kept[0][2]
    assert trainable.graph.node[-1].op_type == op  # the node stays as it was


def test_the_exported_model_is_untouched():
    model, _ = CASES["conv_transpose_k2_s2"]
    before = model.SerializeToString()
    trainable, param_map = to_trainable(model)
    assert model.SerializeToString() == before
    assert "wt" not in {i.name for i in trainable.graph.initializer}
    assert param_map.training_params(["w", "wt", "bt"]) == ["w", "wt_as_conv", "bt"]


def test_registry_names_every_operator_the_cpu_build_cannot_train():
    assert {"Relu", "HardSigmoid", "HardSwish", "PRelu", "LSTM", "GRU", "GlobalMaxPool", "ReduceMax", "DepthToSpace", "Resize", "ConvTranspose",
            "Slice", "Pad", "AveragePool"} <= set(REWRITES)


# -- every zoo model trains after to_trainable --------------------------------------------

ZOO = sorted(p.name for p in (REPO / "models").glob("*.onnx") if p.name != "edge_custom_op.onnx")
_TRAIN_ONE = """
import json, sys
import numpy as np, onnx
from onnxoto.graph import load
from onnxoto.train import TrainingSession
from onnxoto.train import trained_params
from onnxoto.train.forms import to_trainable
model = load(sys.argv[1])
proto, param_map = to_trainable(model.proto)
trained = param_map.training_params(trained_params(model.proto))  # what prune trains
feeds = {}
for i in model.input_names:
    shape = [d if isinstance(d, int) else 2 for d in model.shapes[i]]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(model.dtypes[i])
    feeds[i] = (np.random.default_rng(0).integers(0, 10, shape) if dtype.kind in "iu"
                else np.random.default_rng(0).random(shape)).astype(dtype)
with TrainingSession(proto, "distill", requires_grad=trained) as session:
    outputs = session.eval_outputs(feeds)
    loss = session.train_step(feeds, [np.zeros_like(outputs[n]) for n in session.loss.outputs])
print(json.dumps({"loss": loss, "rewritten": param_map.rewritten, "kept": param_map.kept}))
"""


def _train_in_child(name):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", _TRAIN_ONE, str(REPO / "models" / name)], capture_output=True,
                          text=True, env=env, timeout=300)
    return done.returncode, done.stdout.strip().splitlines()[-1:] or done.stderr.strip().splitlines()[-1:]


@pytest.fixture(scope="module")
def zoo_results():
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(zip(ZOO, pool.map(_train_in_child, ZOO)))


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_trains_after_rewriting(name, zoo_results):
    code, last = zoo_results[name]
    assert code == 0, f"{name}: exit {code}: {last}"
    result = json.loads(last[0])
    assert np.isfinite(result["loss"]) and not result["kept"], result


def test_relu_form_is_exact_in_values_and_gradients(tmp_path):
    """Relu trains as x * (x > 0) for speed only: outputs and gradients are those of Relu itself."""
    model, _ = CASES["relu"]
    trainable, _ = to_trainable(model)
    assert "Relu" not in {n.op_type for n in trainable.graph.node}
    x = inputs(3)
    np.testing.assert_array_equal(run(trainable, x), run(model, x))
    target = np.random.default_rng(3).standard_normal(run(model, x).shape).astype(np.float32)
    grads = []
    for graph in (model, trainable):
        with TrainingSession(graph, "mse", workdir=tmp_path / str(len(grads))) as session:
            session.train_step({"x": x}, target)
            grads.append(session.grads["w"].copy())
    np.testing.assert_array_equal(grads[1], grads[0])
