"""Real onnxruntime-training steps through TrainingSession: learning, in-place views, exact gradients."""
import os
import signal

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from train_models import conv_bn_net, layernorm_net, mlp, run, two_output_net

from onnxoto.errors import DataError, ModelError
from onnxoto.train import TrainingSession, loss_for

RNG = np.random.default_rng(0)


def with_weights(model, weights):
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for init in model.graph.initializer:
        if init.name in weights:
            init.CopyFrom(numpy_helper.from_array(weights[init.name], init.name))
    return model


def sgd(session, lr):
    for name, param in session.params.items():
        param -= lr * session.grads[name]  # in place: onnxruntime's own buffer


def test_loss_decreases_when_stepping_through_the_views():
    x = RNG.standard_normal((64, 3)).astype(np.float32)
    target = np.stack([np.sin(x[:, 0]), x[:, 1] * x[:, 2]], axis=1).astype(np.float32)
    with TrainingSession(mlp(), "mse") as session:
        losses = []
        for _ in range(60):
            losses.append(session.train_step({"x": x}, target))
            sgd(session, 0.1)
        assert session.moved_buffers == 0  # gradient buffers never moved
    assert losses[-1] < 0.5 * losses[0]


def test_classifier_with_batchnorm_learns_and_keeps_running_stats_frozen():
    model = conv_bn_net()
    x = RNG.standard_normal((32, 1, 6, 6)).astype(np.float32)
    labels = (x[:, 0, :3].mean(axis=(1, 2)) > 0).astype(np.int64) + 2 * (x[:, 0, 3:].mean(axis=(1, 2)) > 0)
    with TrainingSession(model, loss_for(model, labels=labels)) as session:
        assert session.loss.kind == "cross_entropy"
        assert "bn.mean" not in session.params and "bn.var" not in session.params
        first = session.train_step({"x": x}, labels)
        for _ in range(150):
            sgd(session, 0.3)
            last = session.train_step({"x": x}, labels)
        trained = with_weights(model, session.weights())
        logits = session.eval_outputs({"x": x})["y"]
        np.testing.assert_allclose(logits, run(trained, {"x": x})[0], rtol=1e-4, atol=1e-5)
        assert session.eval_loss({"x": x}, labels) == pytest.approx(last, rel=1e-5)  # BN frozen in both modes
    assert last < 0.7 * first


def test_writing_a_parameter_view_changes_the_next_step():
    with TrainingSession(mlp(), "mse") as session:
        x = RNG.standard_normal((4, 3)).astype(np.float32)
        session.params["w2"][...] = 0.0
        session.params["b2"][...] = [1.5, -2.0]
        y = session.eval_outputs({"x": x})["y"]
        np.testing.assert_array_equal(y, np.tile([1.5, -2.0], (4, 1)).astype(np.float32))
        loss = session.train_step({"x": x}, np.zeros((4, 2), np.float32))
        assert loss == pytest.approx((1.5**2 + 2.0**2) / 2)


def test_gradients_match_finite_differences_and_do_not_accumulate():
    x = RNG.standard_normal((5, 3)).astype(np.float32)
    target = RNG.standard_normal((5, 2)).astype(np.float32)
    with TrainingSession(mlp(), "mse") as session:
        session.train_step({"x": x}, target)
        grads = {name: g.copy() for name, g in session.grads.items()}
        session.train_step({"x": x}, target)
        for name in grads:
            np.testing.assert_array_equal(session.grads[name], grads[name])
        eps = 1e-2
        for name, param in session.params.items():
            scale = float(np.abs(grads[name]).max())
            for index in list(np.ndindex(param.shape))[:6]:
                estimate = central_difference(session, {"x": x}, target, param, index, eps)
                assert estimate == pytest.approx(grads[name][index], abs=1e-3 * scale), (name, index)


def test_gradient_buffers_stay_put_across_batch_sizes():
    with TrainingSession(conv_bn_net(), "cross_entropy") as session:
        pointers = {name: g.ctypes.data for name, g in session.grads.items()}
        for batch in (8, 3, 16):
            session.train_step({"x": RNG.standard_normal((batch, 1, 6, 6)).astype(np.float32)},
                               RNG.integers(0, 4, batch))
        assert session.moved_buffers == 0
        assert {name: g.ctypes.data for name, g in session.grads.items()} == pointers
        assert all(np.abs(g).sum() > 0 for g in session.grads.values())


def test_layernorm_model_distills():
    model = layernorm_net()
    x = RNG.standard_normal((16, 4, 8)).astype(np.float32)
    teacher = run(layernorm_net(seed=1), {"x": x})[0]
    with TrainingSession(model) as session:  # no labels: distillation
        assert session.loss.kind == "distill"
        first = session.train_step({"x": x}, [teacher])
        for _ in range(30):
            sgd(session, 0.05)
            last = session.train_step({"x": x}, [teacher])
    assert last < first


def test_two_outputs_distill_with_the_sum_of_per_output_mse():
    model = two_output_net()
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    y1, y2 = run(model, {"x": x})
    t1, t2 = y1 + 0.5, y2 - 1.0
    with TrainingSession(model, "distill") as session:
        assert session.loss.targets == ("y1_teacher", "y2_teacher")
        assert session.train_step({"x": x}, [y1, y2]) == pytest.approx(0.0, abs=1e-12)
        assert session.eval_loss({"x": x}, [t1, t2]) == pytest.approx(0.25 + 1.0, rel=1e-5)
        outputs = session.eval_outputs({"x": x})
        np.testing.assert_allclose(outputs["y2"], y2, rtol=1e-6)
        with pytest.raises(DataError, match="2 target arrays"):
            session.train_step({"x": x}, [t1])
        with pytest.raises(DataError, match="shape"):
            session.train_step({"x": x}, [t1[:, :1], t2])


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("opset", [11, 17])  # ReduceSum's axes: an attribute before opset 13, an input from 13
def test_cross_entropy_plus_distillation_is_ce_plus_weighted_softened_kl(opset):
    model = conv_bn_net()
    model.opset_import[0].version = opset
    x = RNG.standard_normal((16, 1, 6, 6)).astype(np.float32)
    labels = RNG.integers(0, 4, 16)
    logits = run(model, {"x": x})[0].astype(np.float64)
    teacher = (logits + RNG.standard_normal(logits.shape)).astype(np.float32)
    spec = loss_for(model, "cross_entropy+distill", weights=[0.7], temperature=3.0)
    assert spec.targets == ("labels", "y_teacher")
    ce = -log_softmax(logits)[np.arange(16), labels].mean()
    soft_teacher, soft_student = log_softmax(teacher / 3.0), log_softmax(logits / 3.0)
    kl = 9.0 * (np.exp(soft_teacher) * (soft_teacher - soft_student)).sum(axis=1).mean()
    with TrainingSession(model, spec) as session:
        assert session.train_step({"x": x}, [labels, teacher]) == pytest.approx(ce + 0.7 * kl, rel=1e-5)
        assert session.eval_loss({"x": x}, [labels, logits.astype(np.float32)]) == pytest.approx(ce, rel=1e-5)
        np.testing.assert_allclose(session.eval_outputs({"x": x})["y"], logits, rtol=1e-5, atol=1e-5)
        with pytest.raises(DataError, match="2 target arrays"):
            session.train_step({"x": x}, labels)


def test_cross_entropy_plus_distillation_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    model = conv_bn_net()
    x = rng.standard_normal((8, 1, 6, 6)).astype(np.float32)
    target = [rng.integers(0, 4, 8), 3.0 * rng.standard_normal((8, 4)).astype(np.float32)]
    with TrainingSession(model, loss_for(model, "cross_entropy+distill", weights=[2.0], temperature=2.0)) as session:
        session.train_step({"x": x}, target)
        grads = {name: g.copy() for name, g in session.grads.items()}
        eps = 1e-2
        # the loss is smooth in the classifier's parameters; behind the ReLU, kinks blur the estimate a little
        for name, tolerance in (("fc.w", 2e-3), ("fc.b", 2e-3), ("conv.w", 3e-2)):
            param, scale = session.params[name], float(np.abs(grads[name]).max())
            for index in list(np.ndindex(param.shape))[:4]:
                estimate = central_difference(session, {"x": x}, target, param, index, eps)
                assert estimate == pytest.approx(grads[name][index], abs=tolerance * scale), (name, index)


def test_cross_entropy_plus_distillation_learns_the_labels_near_the_teacher():
    model = conv_bn_net()
    x = RNG.standard_normal((32, 1, 6, 6)).astype(np.float32)
    labels = (x[:, 0, :3].mean(axis=(1, 2)) > 0).astype(np.int64) + 2 * (x[:, 0, 3:].mean(axis=(1, 2)) > 0)
    teacher = run(model, {"x": x})[0]
    with TrainingSession(model, loss_for(model, "cross_entropy+distill", weights=[0.5])) as session:
        first = session.train_step({"x": x}, [labels, teacher])
        for _ in range(100):
            sgd(session, 0.1)
            last = session.train_step({"x": x}, [labels, teacher])
    assert last < 0.8 * first


def test_workdir_is_removed_on_close_unless_given(tmp_path):
    with TrainingSession(mlp(), "mse") as session:
        made = session.workdir
        assert (made / "training_model.onnx").exists()
    assert not made.exists()
    with TrainingSession(mlp(), "mse", workdir=tmp_path / "work"):
        pass
    assert (tmp_path / "work" / "checkpoint").exists()


def test_a_graph_the_builder_rejects_is_a_model_error():
    model = mlp()
    for node in model.graph.node:
        if node.op_type == "Tanh":
            node.op_type = "HardSwish"  # no gradient in the CPU build
    with pytest.raises(ModelError, match="cannot train mlp: .*HardSwish"):
        TrainingSession(model, "mse")


def test_a_crash_of_the_builder_is_a_model_error(tmp_path, monkeypatch):
    (tmp_path / "sitecustomize.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGFPE)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # only the builder's child process starts after this
    with pytest.raises(ModelError, match=r"cannot train mlp: onnxruntime crashed \(SIGFPE\)"):
        TrainingSession(mlp(), "mse")


def test_bundled_fashion_mnist_resnet_trains_and_its_weights_reproduce_its_outputs():
    from pathlib import Path

    from onnxoto.train import load_data

    path = Path(__file__).resolve().parents[1] / "onnxoto" / "data"
    model = onnx.shape_inference.infer_shapes(onnx.load(path / "fmnist_resnet.onnx"))
    batch = next(load_data(path / "fmnist_train.npz", model).batches(16, shuffle=True, rng=RNG))
    with TrainingSession(model, "cross_entropy") as session:
        assert session.train_step({"x": batch["x"]}, batch["labels"]) < 1.0  # already trained
        sgd(session, 0.01)
        trained = with_weights(model, session.weights())
        np.testing.assert_allclose(session.eval_outputs({"x": batch["x"]})["y"], run(trained, {"x": batch["x"]})[0],
                                   rtol=1e-4, atol=1e-4)


def test_batchnorm_scale_and_shift_gradients_match_finite_differences():
    x = RNG.standard_normal((4, 1, 6, 6)).astype(np.float32)
    target = RNG.standard_normal((4, 4)).astype(np.float32)
    with TrainingSession(conv_bn_net(), "mse") as session:
        session.train_step({"x": x}, target)
        for name in ("bn.scale", "bn.bias", "conv.b"):
            param, grad = session.params[name], session.grads[name].copy()
            for i in range(param.size):
                saved = float(param[i])
                param[i] = saved + 1e-3
                up = session.eval_loss({"x": x}, target)
                param[i] = saved - 1e-3
                down = session.eval_loss({"x": x}, target)
                param[i] = saved
                assert (up - down) / 2e-3 == pytest.approx(grad[i], abs=2e-3 * float(np.abs(grad).max())), (name, i)


def test_only_the_requested_parameters_train():
    x = RNG.standard_normal((8, 3)).astype(np.float32)
    with TrainingSession(mlp(), "mse", requires_grad=["w2", "b2"]) as session:
        assert sorted(session.params) == ["b2", "w2"]
        first = session.train_step({"x": x}, np.ones((8, 2), np.float32))
        sgd(session, 0.5)
        assert session.train_step({"x": x}, np.ones((8, 2), np.float32)) < first


def test_the_sgd_optimizer_graph_can_be_built_too(tmp_path):
    from onnxoto.train import build_artifacts, loss_for

    artifacts = build_artifacts(mlp(), loss_for(mlp(), "mse"), tmp_path, optimizer=True)
    assert artifacts.optimizer_model.exists() and artifacts.checkpoint.exists()
    assert onnx.load(artifacts.optimizer_model).ir_version <= 10


def central_difference(session, feeds, target, param, index, eps):
    """d loss / d param[index] by a central difference, the parameter restored afterwards."""
    saved = float(param[index])
    param[index] = saved + eps
    up = session.eval_loss(feeds, target)
    param[index] = saved - eps
    down = session.eval_loss(feeds, target)
    param[index] = saved
    return (up - down) / (2 * eps)


@pytest.mark.parametrize("batchnorm", ["batch", "frozen"])
def test_batchnorm_trains_on_batch_statistics_or_on_the_frozen_running_ones(batchnorm):
    from onnxoto.train import recalibrate_batchnorm
    from onnxoto.train.data import check_dataset

    model = conv_bn_net()  # its running statistics are far from this batch's
    x = RNG.standard_normal((16, 1, 6, 6)).astype(np.float32) * 3 + 1
    labels = np.arange(16, dtype=np.int64) % 4
    # the model that normalizes by this batch's own statistics: running ones set to them
    on_batch = recalibrate_batchnorm(model, check_dataset({"x": x}, model), batches=None, batch_size=len(x))
    expected = {"batch": on_batch, "frozen": model}[batchnorm]
    logits = run(expected, {"x": x})[0].astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    cross_entropy = float(np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(16), labels]))
    with TrainingSession(model, loss_for(model, labels=labels), batchnorm=batchnorm) as session:
        assert session.train_step({"x": x}, labels) == pytest.approx(cross_entropy, rel=1e-5)
        # eval mode reads the running statistics either way
        np.testing.assert_allclose(session.eval_outputs({"x": x})["y"], run(model, {"x": x})[0], rtol=1e-4, atol=1e-5)


def centered_by_a_run_time_shape():
    """y = x·W minus its row mean, the mean brought back to (N, 1) by a Reshape and an Expand to a target
    computed from y's own shape (how jax2tf writes a softmax's max): onnxruntime's own inference cannot
    size that operand, so the gradient builder needs onnxoto's shapes to reduce the Sub's gradient."""
    w = numpy_helper.from_array(RNG.standard_normal((4, 6)).astype(np.float32), "w")
    one = numpy_helper.from_array(np.array([1], np.int64), "one")
    zero = numpy_helper.from_array(np.array([0], np.int64), "zero")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]),
             helper.make_node("ReduceMean", ["y"], ["m"], axes=[1], keepdims=0),
             helper.make_node("Shape", ["y"], ["shape_y"]),
             helper.make_node("Gather", ["shape_y", "zero"], ["rows"], axis=0),
             helper.make_node("Concat", ["rows", "one"], ["target"], axis=0),
             helper.make_node("Reshape", ["m", "target"], ["m_col"]),
             helper.make_node("Expand", ["m_col", "target"], ["m_wide"]),
             helper.make_node("Sub", ["y", "m_wide"], ["out"])]
    graph = helper.make_graph(nodes, "centered", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 6])], [w, one, zero])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_broadcast_over_a_run_time_shaped_operand_trains_with_exact_gradients():
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    target = RNG.standard_normal((5, 6)).astype(np.float32)
    with TrainingSession(centered_by_a_run_time_shape(), "mse") as session:
        session.train_step({"x": x}, target)  # without the shapes: "cannot reshape {5,6} to {5}"
        grad = session.grads["w"].copy()
        param = session.params["w"]
        scale = float(np.abs(grad).max())
        for index in list(np.ndindex(param.shape))[::5]:
            estimate = central_difference(session, {"x": x}, target, param, index, 1e-2)
            assert estimate == pytest.approx(grad[index], abs=1e-3 * scale), index
