"""BlazeFace-style blocks as tflite2onnx writes them: a residual shortcut widened by a zero Pad on the
channel axis, y = Relu(Conv1x1(DWConv(x)) + Pad(MaxPool(x))), built with onnx.helper (edge_helpers.Net)."""
import numpy as np

from edge_helpers import Net


def channel_pad(net, x, before, after, rank=4, axis=1):
    """A zero Pad of `before`/`after` positions on `axis`: pads and axes as inputs (opset >= 18), pads as
    an input (opset >= 11) or as an attribute."""
    if net.opset >= 18:
        inputs = [x, net.ints(f"{x}_pads", [before, after]), net.const(f"{x}_fill", np.float32(0.0))]
        return net.op("Pad", inputs + [net.ints(f"{x}_axes", [axis])])
    pads = [0] * (2 * rank)
    pads[axis], pads[rank + axis] = before, after
    if net.opset >= 11:
        return net.op("Pad", [x, net.ints(f"{x}_pads", pads), net.const(f"{x}_fill", np.float32(0.0))])
    return net.op("Pad", [x], mode="constant", pads=pads, value=0.0)


def blaze_block(net, x, cin, cout, name, stride=1, pad_at_start=False):
    """Depthwise 3x3 (stride), pointwise cin -> cout, plus the shortcut: MaxPool when strided, then
    zero-padded on the channel axis from cin to cout (at the end, or at the start)."""
    dw = [net.weight(f"{name}.dw.weight", (cin, 1, 3, 3)), net.weight(f"{name}.dw.bias", (cin,), scale=0.1)]
    h = net.op("Conv", [x, *dw], name=f"{name}.dw", kernel_shape=[3, 3], strides=[stride, stride], group=cin,
               pads=[1, 1, 1, 1] if stride == 1 else [0, 0, 1, 1])
    h = net.conv(h, cin, cout, k=1, name=f"{name}.pw")
    shortcut = x
    if stride > 1:
        shortcut = net.op("MaxPool", [x], kernel_shape=[stride, stride], strides=[stride, stride])
    if cout > cin:
        extra = cout - cin
        shortcut = channel_pad(net, shortcut, extra if pad_at_start else 0, 0 if pad_at_start else extra)
    return net.op("Relu", [net.op("Add", [h, shortcut])])


def blaze_net(opset=11, seed=0):
    """stem 3 -> 8; blocks 8 -> 8, 8 -> 12 (padded at the end), 12 -> 16 strided with a MaxPool (padded
    at the start), 16 -> 16, 16 -> 20 strided (padded at the end); a 1x1 head to 4 outputs."""
    net = Net(opset=opset, seed=seed)
    h = net.op("Relu", [net.conv(net.input("x", ("N", 3, 16, 16)), 3, 8, name="stem")])
    h = blaze_block(net, h, 8, 8, "b1")
    h = blaze_block(net, h, 8, 12, "b2")
    h = blaze_block(net, h, 12, 16, "b3", stride=2, pad_at_start=True)
    h = blaze_block(net, h, 16, 16, "b4")
    h = blaze_block(net, h, 16, 20, "b5", stride=2)
    return net.model(net.conv(h, 20, 4, k=1, name="head"))
