"""Write hand-built edge-case models to models/edge_<name>.onnx (no torch needed).

    python tools/make_edge_models.py [--only nhwc,bn_unfolded] [--no-check]

Each model takes `x` (N, 3, 16, 16) float (N symbolic) and gives `y`; opset 17, IR 8-10.
Weights are random but deterministic (one seed per model) and never zero, so every channel
matters. Every model except edge_custom_op runs in onnxruntime (checked unless --no-check).
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
from edge_helpers import Net, run  # noqa: E402

MODELS = os.path.join(REPO, "models")
NHWC, NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


def constant_weights():
    """(a) Weights in Constant nodes, as old paddle2onnx files have them: conv-relu-conv-GAP-flatten-gemm."""
    n = Net(seed=1)
    h = n.op("Relu", [n.conv(n.input(), 3, 8, name="conv1")])
    h = n.op("GlobalAveragePool", [n.conv(h, 8, 6, name="conv2")])
    n.linear(n.op("Flatten", [h]), 6, 4, name="fc")
    n.nodes[-1].output[0] = "y"
    model = n.model("y")
    graph = model.graph
    constants = [helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t) for t in graph.initializer]
    del graph.initializer[:]
    nodes = constants + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def nhwc_sandwich():
    """(b) tf2onnx layout: activations kept NHWC, every Conv wrapped in Transpose to NCHW and back; residual Add."""
    n = Net(seed=2)

    def conv_nhwc(h, cin, cout, name):
        h = n.op("Transpose", [h], perm=NCHW)
        return n.op("Transpose", [n.conv(h, cin, cout, name=name)], perm=NHWC)

    h = n.op("Transpose", [n.input()], perm=NHWC)
    h1 = n.op("Relu", [conv_nhwc(h, 3, 8, "conv1")])
    h2 = n.op("Relu", [conv_nhwc(h1, 8, 8, "conv2")])
    h = n.op("Add", [h1, h2])
    h = conv_nhwc(h, 8, 4, "conv3")
    n.op("Transpose", [h], outputs=["y"], perm=NCHW)
    return n.model("y", ir_version=9)


def bn_unfolded():
    """(c) BatchNorm written as Mul and Add with (C, 1, 1) constants after a bias-free conv."""
    n = Net(seed=3)
    h = n.conv(n.input(), 3, 8, bias=False, name="conv1")
    h = n.op("Mul", [h, n.weight("bn1.scale", (8, 1, 1), scale=0.5, offset=1.0)])
    h = n.op("Add", [h, n.weight("bn1.shift", (8, 1, 1), scale=0.2)])
    h = n.op("Relu", [h])
    n.conv(h, 8, 4, name="conv2")
    n.nodes[-1].output[0] = "y"
    return n.model("y")


def flatten_gemm():
    """(d) Flatten of a (N, 4, 4, 4) map into Gemm: channel c is the block [16c, 16c + 16) of the features."""
    n = Net(seed=4)
    h = n.op("Relu", [n.conv(n.input(), 3, 4, name="conv1")])
    h = n.op("MaxPool", [h], kernel_shape=[4, 4], strides=[4, 4])
    h = n.op("Flatten", [h], axis=1)
    h = n.op("Relu", [n.linear(h, 64, 8, name="fc1")])
    n.linear(h, 8, 5, name="fc2")
    n.nodes[-1].output[0] = "y"
    return n.model("y")


def reshape_matmul():
    """(e) Reshape-based flatten, [0, -1] on one branch and [-1, C*H*W] on the other, then MatMul + Add."""
    n = Net(seed=5)
    x = n.input()
    outs = []
    for k, target in enumerate(([0, -1], [-1, 64]), start=1):
        h = n.op("Relu", [n.conv(x, 3, 4, name=f"conv{k}")])
        h = n.op("MaxPool", [h], kernel_shape=[4, 4], strides=[4, 4])
        h = n.op("Reshape", [h, n.ints(f"shape{k}", target)])
        h = n.op("MatMul", [h, n.weight(f"fc{k}.weight", (64, 6), scale=0.125)])
        outs.append(n.op("Add", [h, n.weight(f"fc{k}.bias", (6,), scale=0.1)]))
    h = n.op("Relu", [n.op("Add", outs)])
    n.op("MatMul", [h, n.weight("head.weight", (6, 3))], outputs=["y"])
    return n.model("y")


def gemm_trans():
    """(f) Gemm with transB=1 (weight (out, in)) followed by Gemm with transB=0 (weight (in, out))."""
    n = Net(seed=6)
    h = n.op("GlobalAveragePool", [n.op("Relu", [n.conv(n.input(), 3, 8, name="conv1")])])
    h = n.op("Flatten", [h])
    h = n.op("Relu", [n.linear(h, 8, 12, name="fc_t1", trans_b=1)])
    h = n.op("Relu", [n.linear(h, 12, 10, name="fc_t0", trans_b=0)])
    n.linear(h, 10, 4, name="head")
    n.nodes[-1].output[0] = "y"
    return n.model("y", ir_version=10)


def depthwise_grouped():
    """(g) Depthwise-separable block (group = C) and a grouped conv (group = 2)."""
    n = Net(seed=7)
    h = n.op("Relu", [n.conv(n.input(), 3, 8, name="conv1")])
    h = n.op("Relu", [n.conv(h, 8, 8, group=8, name="dw")])
    h = n.op("Relu", [n.conv(h, 8, 8, k=1, name="pw")])
    h = n.op("Relu", [n.conv(h, 8, 8, group=2, name="grouped")])
    n.conv(h, 8, 4, k=1, name="conv_out")
    n.nodes[-1].output[0] = "y"
    return n.model("y")


def slice_split_concat():
    """(h) Split with unequal sizes (3, 7) on channels, Concat back, then a Slice of channels 1..6."""
    n = Net(seed=8)
    h = n.op("Relu", [n.conv(n.input(), 3, 10, name="conv1")])
    a, b = n.op("Split", [h, n.ints("split_sizes", [3, 7])], outputs=2, axis=1)
    b = n.op("Relu", [n.conv(b, 7, 5, name="conv_b")])
    h = n.op("Concat", [n.op("Relu", [a]), b], axis=1)  # 8 channels: 3 from conv1, 5 from conv_b
    h = n.op("Slice", [h, n.ints("starts", [1]), n.ints("ends", [7]), n.ints("axes", [1])])
    n.conv(h, 6, 4, name="conv_out")
    n.nodes[-1].output[0] = "y"
    return n.model("y")


def sigmoid_gate():
    """(i) Sigmoid between two convs (unprunable) and a Squeeze-Excitation Mul gate (prunable)."""
    n = Net(seed=9)
    h = n.op("Sigmoid", [n.conv(n.input(), 3, 8, name="conv1")])
    h = n.op("Relu", [n.conv(h, 8, 8, name="conv2")])
    s = n.op("GlobalAveragePool", [h])
    s = n.op("Relu", [n.conv(s, 8, 4, k=1, name="se_reduce")])
    s = n.op("Sigmoid", [n.conv(s, 4, 8, k=1, name="se_expand")])
    h = n.op("Mul", [h, s])
    n.conv(h, 8, 4, name="conv_out")
    n.nodes[-1].output[0] = "y"
    return n.model("y")


def custom_op():
    """(j) An operator of an unknown domain (com.example.Foo) between two convs; cannot run."""
    n = Net(seed=10)
    h = n.op("Relu", [n.conv(n.input(), 3, 8, name="conv1")])
    h = n.op("Foo", [h], name="foo", domain="com.example")
    n.conv(h, 8, 4, name="conv2")
    n.nodes[-1].output[0] = "y"
    model = n.model("y")
    # give Foo's output a type so shape inference can go on past it
    model.graph.value_info.append(helper.make_tensor_value_info("foo", onnx.TensorProto.FLOAT, ["N", 8, 16, 16]))
    return model


def shared_zero_bias():
    """(k) TorchScript's economy: one all-zero bias read through Identity nodes by convs of two different layers."""
    n = Net(seed=11)
    zero = n.const("zero_bias", np.zeros(8, np.float32))
    b1 = n.op("Identity", [zero], name="bias_alias1")
    b2 = n.op("Identity", [zero], name="bias_alias2")
    h = n.op("Conv", [n.input(), n.weight("conv1.weight", (8, 3, 3, 3)), b1], name="conv1", kernel_shape=[3, 3],
             pads=[1, 1, 1, 1])
    h = n.op("Relu", [h])
    h = n.op("Conv", [h, n.weight("conv2.weight", (8, 8, 3, 3)), b2], name="conv2", kernel_shape=[3, 3],
             pads=[1, 1, 1, 1])
    h = n.op("Relu", [h])
    n.conv(h, 8, 4, name="conv3")
    n.nodes[-1].output[0] = "y"
    return n.model("y")


def tied_weight():
    """(l) One non-uniform weight (8, 6) read by two MatMuls on two branches: a real tie, the branches stay coupled."""
    n = Net(seed=12)
    x = n.input()
    shared = n.weight("tied.weight", (8, 6))
    outs = []
    for k in (1, 2):
        h = n.op("Relu", [n.conv(x, 3, 8, name=f"conv{k}")])
        h = n.op("Flatten", [n.op("GlobalAveragePool", [h])])
        outs.append(n.op("Relu", [n.op("MatMul", [h, shared], name=f"matmul{k}")]))
    h = n.op("Concat", outs, axis=1)
    n.op("MatMul", [h, n.weight("head.weight", (12, 4))], outputs=["y"])
    return n.model("y")


MAKERS = {
    "constant_weights": constant_weights,
    "nhwc": nhwc_sandwich,
    "bn_unfolded": bn_unfolded,
    "flatten_gemm": flatten_gemm,
    "reshape_matmul": reshape_matmul,
    "gemm_trans": gemm_trans,
    "depthwise_grouped": depthwise_grouped,
    "slice_split_concat": slice_split_concat,
    "sigmoid_gate": sigmoid_gate,
    "custom_op": custom_op,
    "shared_zero_bias": shared_zero_bias,
    "tied_weight": tied_weight,
}
NOT_RUNNABLE = {"custom_op"}


def build(name):
    model = MAKERS[name]()
    if name not in NOT_RUNNABLE:
        onnx.checker.check_model(model, full_check=True)
    return model


def path_of(name):
    return os.path.join(MODELS, f"edge_{name}.onnx")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated names (default: all)")
    parser.add_argument("--no-check", action="store_true", help="skip running each model in onnxruntime")
    args = parser.parse_args(argv)
    names = [s for s in args.only.split(",") if s] or list(MAKERS)
    os.makedirs(MODELS, exist_ok=True)
    for name in names:
        model = build(name)
        onnx.save(model, path_of(name))
        status = "written"
        if name not in NOT_RUNNABLE and not args.no_check:
            out = run(model)["y"]
            status = f"runs, y {tuple(out.shape)}, |y| max {np.abs(out).max():.3g}"
        print(f"edge_{name}.onnx: {status}")


if __name__ == "__main__":
    main()
