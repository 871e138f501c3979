"""BatchNormalization running statistics recomputed from training data."""
import numpy as np
from onnx import numpy_helper
from train_models import conv_bn_net, run

from onnxoto.train.bn import recalibrate_batchnorm
from onnxoto.train.data import check_dataset


def initializer(model, name):
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def test_wrong_running_stats_are_replaced_by_the_data_statistics():
    model = conv_bn_net()  # its running mean/var are random, not the data's
    x = np.random.default_rng(0).standard_normal((50, 1, 6, 6)).astype(np.float32) * 3 + 1
    conv_out = run(model_with_output(model, "c"), {"x": x})[-1]
    data = check_dataset({"x": x}, model)
    fixed = recalibrate_batchnorm(model, data, batches=None, batch_size=16)
    np.testing.assert_allclose(initializer(fixed, "bn.mean"), conv_out.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(initializer(fixed, "bn.var"), conv_out.var(axis=(0, 2, 3)), rtol=1e-5)
    assert not np.allclose(initializer(model, "bn.mean"), initializer(fixed, "bn.mean"))  # input untouched


def test_shared_running_stats_initializer_gets_a_copy_per_batchnorm():
    model = conv_bn_net()
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    bn.input[3] = "conv.b"  # the exporter's economy: one all-zero tensor read twice
    x = np.random.default_rng(1).standard_normal((8, 1, 6, 6)).astype(np.float32)
    fixed = recalibrate_batchnorm(model, check_dataset({"x": x}, model), batches=2, batch_size=4)
    np.testing.assert_array_equal(initializer(fixed, "conv.b"), np.zeros(6, np.float32))
    bn = next(n for n in fixed.graph.node if n.op_type == "BatchNormalization")
    assert bn.input[3] != "conv.b"


def test_each_layer_is_measured_behind_recalibrated_layers_not_stale_ones():
    # conv -> bn1 -> relu -> conv2 -> bn2, both with wrong statistics: bn2's must be those of conv2's output
    # while bn1 normalizes by the data's statistics (in training, by the batch's: here one batch is all of it)
    from onnx import TensorProto, helper, numpy_helper

    model = conv_bn_net()
    rng = np.random.default_rng(2)
    graph = model.graph
    relu = next(n for n in graph.node if n.op_type == "Relu")
    later = [n for n in graph.node if n.op_type in ("GlobalAveragePool", "Reshape", "Gemm")]
    for node in later:
        graph.node.remove(node)
    graph.node.extend([helper.make_node("Conv", ["r", "conv2.w"], ["c2"], pads=[1, 1, 1, 1]),
                       helper.make_node("BatchNormalization", ["c2", "bn.scale", "bn.bias", "bn2.mean", "bn2.var"],
                                        ["y"])])
    graph.initializer.extend([numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("conv2.w", rng.standard_normal((6, 6, 3, 3)) * 0.3), ("bn2.mean", rng.standard_normal(6)),
        ("bn2.var", rng.uniform(0.5, 2, 6)))])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    assert relu.output[0] == "r"
    x = rng.standard_normal((40, 1, 6, 6)).astype(np.float32) * 2 + 1
    data = check_dataset({"x": x}, model)
    fixed = recalibrate_batchnorm(model, data, batches=None, batch_size=len(x))
    conv2_out = run(model_with_output(fixed, "c2"), {"x": x})[-1]  # behind bn1's new statistics
    np.testing.assert_allclose(initializer(fixed, "bn2.mean"), conv2_out.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(initializer(fixed, "bn2.var"), conv2_out.var(axis=(0, 2, 3)), rtol=1e-4)
    stale = run(model_with_output(model, "c2"), {"x": x})[-1]  # what measuring through bn1's old statistics gives
    assert not np.allclose(initializer(fixed, "bn2.var"), stale.var(axis=(0, 2, 3)), rtol=1e-2)


def model_with_output(model, name):
    from onnx import TensorProto, helper

    probe = type(model).FromString(model.SerializeToString())
    probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return probe


def test_a_model_whose_batchnorm_cannot_be_probed_fails_before_training(monkeypatch):
    import onnx
    import pytest

    from onnxoto.errors import ModelError
    from onnxoto.train.bn import check_recalibration

    model = conv_bn_net()
    check_recalibration(model)  # opset 17: training mode needs no conversion
    model.opset_import[0].version = 12

    def refuse(*args):
        raise RuntimeError("BaseConverter.h:73: adapter_lookup: Assertion `false` failed: No Adapter")
    monkeypatch.setattr(onnx.version_converter, "convert_version", refuse)
    with pytest.raises(ModelError, match="opset 12 to 14 failed .*No Adapter.*--batchnorm frozen"):
        check_recalibration(model)
