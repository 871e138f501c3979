"""Zoo models with operators onnxruntime-training cannot differentiate as exported (onnx.helper, no torch).

    /work/venv/bin/python tools/make_forms_models.py     # writes models/forms_*.onnx

Input `x` float (N, 3, 32, 32), N symbolic; opset 17, IR 8; random weights, one seed per model.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")


class Net:
    """A tiny builder: each method appends nodes and returns the output name."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.weights, self.count = [], {}, 0

    def name(self, op):
        self.count += 1
        return f"{op.lower()}_{self.count}"

    def op(self, op, inputs, **attributes):
        out = self.name(op)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attributes))
        return out

    def weight(self, shape, scale=None, name=None):
        name = name or self.name("w")
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        self.weights[name] = (self.rng.standard_normal(shape) * (scale or 1 / np.sqrt(fan_in))).astype(np.float32)
        return name

    def const(self, values, dtype=np.int64):
        name = self.name("c")
        self.weights[name] = np.asarray(values, dtype)
        return name

    def conv(self, x, cin, cout, k=3, stride=1, group=1):
        w, b = self.weight((cout, cin // group, k, k)), self.weight((cout,), 0.1)
        return self.op("Conv", [x, w, b], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group)

    def gemm(self, x, cin, cout):
        return self.op("Gemm", [x, self.weight((cout, cin)), self.weight((cout,), 0.1)], transB=1)

    def head(self, x, channels, classes=10, pool="GlobalAveragePool"):
        pooled = self.op(pool, [x])
        return self.gemm(self.op("Flatten", [pooled]), channels, classes)

    def save(self, name, outputs):
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
                                  outs, [numpy_helper.from_array(v, k) for k, v in self.weights.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="make_forms_models")
        model.ir_version = 8
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, os.path.join(MODELS, f"{name}.onnx"))
        print(f"{name}.onnx: {len(model.graph.node)} nodes, "
              f"{sum(v.size for v in self.weights.values() if v.dtype == np.float32)} params")


def renamed(net, value, name):
    net.nodes.append(helper.make_node("Identity", [value], [name], name=f"{name}_out"))
    return name


def mobilenetv3():
    """Stem Conv s2 + HardSwish; inverted residual with SE (HardSigmoid gate); HardSwish head."""
    net = Net(11)
    x = net.op("HardSwish", [net.conv("x", 3, 16, stride=2)])
    expanded = net.op("HardSwish", [net.conv(x, 16, 48, k=1)])
    depthwise = net.op("HardSwish", [net.conv(expanded, 48, 48, group=48)])
    squeezed = net.op("Relu", [net.conv(net.op("GlobalAveragePool", [depthwise]), 48, 12, k=1)])
    gate = net.op("HardSigmoid", [net.conv(squeezed, 12, 48, k=1)], alpha=1 / 6, beta=0.5)
    projected = net.conv(net.op("Mul", [depthwise, gate]), 48, 16, k=1)
    x = net.op("Add", [x, projected])
    x = net.op("HardSwish", [net.conv(x, 16, 32, k=1)])
    renamed(net, net.head(x, 32), "y")
    net.save("forms_mobilenetv3", ["y"])


def fpn():
    """Bottom-up 16/32/64 (s2 each); top-down: nearest x2 + lateral 1x1, bilinear x2 (half_pixel
    and align_corners); a 3x3 smoothing conv on the finest level; output (N, 8, 16, 16)."""
    net = Net(12)
    c2 = net.op("Relu", [net.conv("x", 3, 16, stride=2)])
    c3 = net.op("Relu", [net.conv(c2, 16, 32, stride=2)])
    c4 = net.op("Relu", [net.conv(c3, 32, 64, stride=2)])
    p4 = net.conv(c4, 64, 8, k=1)
    up4 = net.op("Resize", [p4, "", net.const([1, 1, 2, 2], np.float32)], mode="nearest")
    p3 = net.op("Add", [net.conv(c3, 32, 8, k=1), up4])
    up3 = net.op("Resize", [p3, "", net.const([1, 1, 2, 2], np.float32)], mode="linear",
                 coordinate_transformation_mode="half_pixel")
    p2 = net.op("Add", [net.conv(c2, 16, 8, k=1), up3])
    side = net.op("Resize", [p4, "", net.const([1, 1, 4, 4], np.float32)], mode="linear",
                  coordinate_transformation_mode="align_corners")
    renamed(net, net.conv(net.op("Add", [p2, side]), 8, 8), "y")
    net.save("forms_fpn", ["y"])


def superres():
    """ESPCN-style: Conv 5x5 32, Conv 3x3 16, Conv 3x3 to 3*2*2, DepthToSpace(2, DCR) and a CRD
    variant on a side path; output (N, 3, 64, 64)."""
    net = Net(13)
    x = net.op("Relu", [net.conv("x", 3, 32, k=5)])
    x = net.op("Relu", [net.conv(x, 32, 16)])
    dcr = net.op("DepthToSpace", [net.conv(x, 16, 12)], blocksize=2, mode="DCR")
    crd = net.op("DepthToSpace", [net.conv(x, 16, 12)], blocksize=2, mode="CRD")
    renamed(net, net.op("Add", [dcr, crd]), "y")
    net.save("forms_superres", ["y"])


def global_max():
    """Conv-Relu 16, 32 s2; GlobalMaxPool; a side ReduceMax over H, W; Linear 10."""
    net = Net(14)
    x = net.op("Relu", [net.conv("x", 3, 16)])
    x = net.op("Relu", [net.conv(x, 16, 32, stride=2)])
    pooled = net.op("Flatten", [net.op("GlobalMaxPool", [x])])
    side = net.op("ReduceMax", [x], axes=[2, 3], keepdims=0)
    renamed(net, net.gemm(net.op("Add", [pooled, side]), 32, 10), "y")
    net.save("forms_globalmax", ["y"])


def two_outputs():
    """A shared trunk (Conv 16, 32 s2, reflect Pad) with a classifier `y` (N, 10) and a
    ConvTranspose x2 segmentation head `y2` (N, 4, 32, 32)."""
    net = Net(15)
    x = net.op("Relu", [net.conv("x", 3, 16)])
    x = net.op("Pad", [x, net.const([0, 0, 1, 1, 0, 0, 1, 1])], mode="reflect")
    x = net.op("Relu", [net.op("Conv", [x, net.weight((32, 16, 3, 3)), net.weight((32,), 0.1)],
                               kernel_shape=[3, 3], strides=[2, 2])])
    renamed(net, net.head(x, 32), "y")
    up = net.op("ConvTranspose", [x, net.weight((32, 4, 2, 2)), net.weight((4,), 0.1)], kernel_shape=[2, 2], strides=[2, 2])
    renamed(net, up, "y2")
    net.save("forms_two_outputs", ["y", "y2"])


if __name__ == "__main__":
    for make in (mobilenetv3, fpn, superres, global_max, two_outputs):
        make()
