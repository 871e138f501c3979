"""Which initializers train, and the graph fixes applied before building the training graph."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from train_models import conv_bn_net, layernorm_net, mlp, run

from onnxoto.errors import ModelError
from onnxoto.train.trainable import prepare_for_training, trainable_params


def test_batchnorm_running_stats_and_reshape_shapes_are_not_trainable():
    assert trainable_params(conv_bn_net()) == ["conv.w", "conv.b", "bn.scale", "bn.bias", "fc.w", "fc.b"]


def test_shape_like_float_inputs_are_not_trainable():
    inits = {"w": np.ones((2, 3), np.float32), "scales": np.array([1, 1, 2, 2], np.float32),
             "pads": np.zeros(4, np.int64), "exponent": np.array(2.0, np.float32),
             "unused": np.ones(3, np.float32), "to_shape": np.ones(3, np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Pow", ["m", "exponent"], ["p"]),
             helper.make_node("Shape", ["to_shape"], ["s"]),  # only its shape is read
             helper.make_node("Unsqueeze", ["p", "axes"], ["u"]),
             helper.make_node("Resize", ["u", "", "scales"], ["y"])]
    inits["axes"] = np.array([0, 1], np.int64)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    assert trainable_params(helper.make_model(graph)) == ["w"]


def test_layernorm_gets_mean_and_invstddev_outputs_and_computes_the_same():
    model = layernorm_net()
    prepared = prepare_for_training(model)
    node = next(n for n in prepared.graph.node if n.op_type == "LayerNormalization")
    assert len(node.output) == 3 and all(node.output)
    assert len(next(n for n in model.graph.node if n.op_type == "LayerNormalization").output) == 1  # input untouched
    x = np.random.default_rng(0).standard_normal((2, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(run(prepared, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-6)


def test_batchnorm_becomes_an_affine_op_over_frozen_stats_with_the_same_outputs():
    model = conv_bn_net()
    prepared = prepare_for_training(model)
    assert "BatchNormalization" not in [n.op_type for n in prepared.graph.node]
    x = np.random.default_rng(0).standard_normal((3, 1, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run(prepared, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_batchnorm_is_made_affine_without_value_info_too():
    # a model read with plain onnx.load has no value_info: BatchNorm must not stay (it would train on batch stats)
    model = conv_bn_net()
    del model.graph.value_info[:]
    prepared = prepare_for_training(model)
    assert "BatchNormalization" not in [n.op_type for n in prepared.graph.node]
    x = np.random.default_rng(0).standard_normal((3, 1, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run(prepared, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_training_mode_batchnorm_is_put_back_into_inference_mode():
    model = conv_bn_net()
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    bn.attribute.append(helper.make_attribute("training_mode", 1))
    bn.output.extend(["running_mean_out", "running_var_out"])
    prepared = prepare_for_training(model)
    last = next(n for n in prepared.graph.node if "n" in n.output)
    assert list(last.output) == ["n"] and last.op_type == "Add"
    x = np.random.default_rng(0).standard_normal((3, 1, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run(prepared, {"x": x})[0], run(conv_bn_net(), {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_batchnorm_whose_running_stats_outputs_are_used_is_refused():
    model = conv_bn_net()
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    bn.attribute.append(helper.make_attribute("training_mode", 1))
    bn.output.extend(["rm", "rv"])
    model.graph.output.append(helper.make_tensor_value_info("rm", TensorProto.FLOAT, [6]))
    with pytest.raises(ModelError, match="running statistics"):
        prepare_for_training(model)


def test_mlp_params():
    assert trainable_params(mlp()) == ["w1", "b1", "w2", "b2"]


def test_an_opset_11_model_with_a_declared_minus_one_trains(tmp_path):
    """Old paddle2onnx files: opset 11 (Clip's gradient needs LessOrEqual, opset 12) and -1 for the batch."""
    from onnxoto import graph
    from onnxoto.train import TrainingSession

    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((3, 4)).astype(np.float32), "lo": np.array(0.0, np.float32),
             "hi": np.array(6.0, np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Clip", ["m", "lo", "hi"], ["y"])]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 4])
    proto = helper.make_model(helper.make_graph(nodes, "old", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3])],
                                                [out], [numpy_helper.from_array(v, k) for k, v in inits.items()]),
                              opset_imports=[helper.make_opsetid("", 11)])
    proto.ir_version = 6
    model = graph.from_proto(proto, "old")
    assert all(isinstance(d, str) for d in (model.shapes["x"][0], model.shapes["y"][0]))  # -1 became a symbol
    prepared = prepare_for_training(model.proto)
    assert next(o.version for o in prepared.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert next(o.version for o in model.proto.opset_import if o.domain in ("", "ai.onnx")) == 11  # ours unchanged
    x = (rng.standard_normal((8, 3)) * 3).astype(np.float32)
    with TrainingSession(prepared, "mse", workdir=tmp_path) as session:
        target = np.clip(x @ (inits["w"] * 0.5), 0, 6).astype(np.float32)
        first = session.train_step({"x": x}, [target])
        assert np.isfinite(first) and first > 0 and np.abs(session.grads["w"]).sum() > 0
