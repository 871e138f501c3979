"""Failure classes seen on real exports, each on a small model that has it: shape arithmetic on symbolic
sizes (ShuffleNetV2's channel shuffle), and operators onnxruntime-training cannot differentiate, refused
before training in one line naming the operator."""
import numpy as np
import onnx
from click.testing import CliRunner

from crash_models import channel_shuffle_net, images
from edge_helpers import Net
from onnxoto import graph, groups, verify
from onnxoto.cli import main


def test_channel_shuffle_with_symbolic_sizes_keeps_shapes_and_its_branch_certifies():
    """Reshape targets computed from Shape with a symbolic batch: inference alone leaves them unknown, and the
    cut's group arithmetic met symbolic channel counts (TypeError: 'str' // 'int'). Now the branch's
    middle channels are a prunable group and cutting them is exact."""
    model = graph.from_proto(channel_shuffle_net())
    assert model.shapes["branch_dw"][1] == 6
    analysis = groups.analyze(model)
    [group] = analysis.prunable
    assert group.num_zigs == 6
    cert = verify.certify(analysis, subsets=3)
    assert cert.passed and cert.groups_verified == 1


def test_an_operator_without_a_trainable_form_is_refused_before_training(tmp_path):
    net = Net(opset=13)
    h = net.op("Relu", [net.conv(net.input("x", ("N", 3, 8, 8)), 3, 4, name="conv1")])
    scales = net.const("scales", np.array([1, 1, 2, 2], np.float32))
    up = net.op("Resize", [net.conv(h, 4, 2, name="conv2"), "", scales], name="upsample", mode="cubic")
    onnx.save(net.model(up), tmp_path / "cubic.onnx")
    np.savez(tmp_path / "x.npz", x=images(8, 8))
    out = tmp_path / "small.onnx"
    result = CliRunner().invoke(main, ["prune", str(tmp_path / "cubic.onnx"), "--data", str(tmp_path / "x.npz"),
                                       "-o", str(out), "--epochs", "1"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: cubic.onnx: Resize 'upsample' has no trainable form in onnxruntime-training (mode=cubic)")
    assert not out.exists()


def test_a_dynamically_quantized_conv_is_declined_with_the_reason():
    """onnxruntime's dynamic quantizer: the activation through DynamicQuantizeLinear into ConvInteger, the
    float bias quantized at run time (Div by the scales, Floor, Cast to int32) and added to the integer
    sum. Every cut of such a bias group failed the checker; analysis now declines it and says why."""
    from onnx import TensorProto
    net = Net(opset=13)
    x = net.input("x", ("N", 3, 8, 8))
    q, scale, zero = net.op("DynamicQuantizeLinear", [x], outputs=3)
    weight = net.const("w_q", np.random.default_rng(0).integers(0, 255, (4, 3, 3, 3)).astype(np.uint8))
    total = net.op("ConvInteger", [q, weight, zero, net.const("w_zero", np.array(128, np.uint8))], pads=[1] * 4)
    bias_scale = net.op("Mul", [scale, net.const("w_scale", np.array(0.01, np.float32))])
    bias = net.op("Cast", [net.op("Floor", [net.op("Div", [net.weight("bias", (4,)), bias_scale])])],
                  to=TensorProto.INT32)
    summed = net.op("Add", [total, net.op("Unsqueeze", [bias, net.ints("hw", [1, 2])])])
    out = net.op("Mul", [net.op("Cast", [summed], to=TensorProto.FLOAT), bias_scale])
    analysis = groups.analyze(graph.from_proto(net.model(net.conv(out, 4, 2, name="head"))))
    [bias_group] = [g for g in analysis.groups if "bias" in g.initializers]
    assert not bias_group.prunable and "quantizes these channels to integers" in bias_group.reason
