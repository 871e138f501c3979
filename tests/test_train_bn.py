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


def model_with_output(model, name):
    from onnx import TensorProto, helper

    probe = type(model).FromString(model.SerializeToString())
    probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return probe
