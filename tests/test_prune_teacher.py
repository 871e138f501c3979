"""The teacher's outputs are computed once per sample and travel with the shuffled batches: the targets
a step sees are the ones the teacher computes for that batch."""
import os

import numpy as np
import pytest

from onnxoto import graph
from onnxoto.prune import loop
from onnxoto.graph import session as inference_session
from onnxoto.train import load_data, loss_for

DATA = os.path.join(os.path.dirname(__file__), "..", "onnxoto", "data")


@pytest.fixture(scope="module")
def setup():
    model = graph.load(os.path.join(DATA, "fmnist_resnet.onnx"))
    with np.load(os.path.join(DATA, "fmnist_train.npz")) as d:
        arrays = {"x": d["x"][:300], "labels": d["labels"][:300]}
    dataset = load_data([arrays], model.proto)
    return model, dataset, inference_session(model.proto)


@pytest.mark.parametrize("kind", ["distill", "cross_entropy+distill"])
def test_cached_teacher_outputs_are_the_teachers_for_each_shuffled_batch(setup, kind):
    model, dataset, teacher = setup
    loss = loss_for(model.proto, kind=kind, labels=dataset.labels)
    cached = loop.with_teacher_outputs(dataset, loss, teacher, batch_size=64)
    assert cached is not dataset
    for batch in loop.epoch_batches(cached, 48, seed=0, epoch=1):
        got = loop.targets_for(batch, loss, teacher=None)  # no teacher: the cache must serve every batch
        want = loop.targets_for({k: v for k, v in batch.items() if not k.startswith(loop.TEACHER)}, loss, teacher)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_cross_entropy_or_a_cache_past_the_budget_runs_no_teacher_up_front(setup, monkeypatch):
    model, dataset, teacher = setup
    assert loop.with_teacher_outputs(dataset, loss_for(model.proto, labels=dataset.labels), teacher, 64) is dataset
    monkeypatch.setattr(loop, "TEACHER_CACHE_BYTES", 1000)  # 300 samples x 10 logits x 4 bytes do not fit
    assert loop.with_teacher_outputs(dataset, loss_for(model.proto, kind="distill"), teacher, 64) is dataset


def time_major_model(path):
    """x [N, 8] -> 16 hidden channels -> y [3, N, 4]: the output's batch is on axis 1 (a CRNN's [T, N, C])."""
    from onnx import TensorProto, helper, numpy_helper, save
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)
             for name, shape in (("w1", (8, 16)), ("w2", (16, 12)))]
    inits.append(numpy_helper.from_array(np.array([-1, 3, 4], np.int64), "shape"))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["z"]), helper.make_node("Reshape", ["z", "shape"], ["z3"]),
             helper.make_node("Transpose", ["z3"], ["y"], perm=[1, 0, 2])]
    g = helper.make_graph(nodes, "time_major", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, "N", 4])], inits)
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_a_time_major_output_is_not_cached_by_rows_and_the_model_prunes(tmp_path):
    from onnxoto.prune import PruneOptions, prune
    path = time_major_model(str(tmp_path / "tm.onnx"))
    model = graph.load(path)
    x = np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32)
    dataset = load_data([{"x": x}], model.proto)
    loss = loss_for(model.proto, kind="distill")
    assert loop.with_teacher_outputs(dataset, loss, inference_session(model.proto), batch_size=16) is dataset
    np.savez(tmp_path / "x.npz", x=x)
    result = prune(path, str(tmp_path / "x.npz"), str(tmp_path / "small.onnx"), log=lambda s: None,
                   options=PruneOptions(epochs=1, batch_size=16, target_sparsity=0.5, base="adamw"))
    assert result.verified


def fixed_batch_recurrent_model(path):
    """x [1, 5, 8] -> 16 hidden channels -> 6 -> an LSTM over the 5 steps, time-major, from a zero state of batch
    1 (so the file runs one row at a time) -> y [5, 1, 4]; y declared [1, T], as ddddocr's recognizer declares
    its output: the run contradicts the declaration, and the rows are on axis 1."""
    from onnx import TensorProto, helper, numpy_helper, save
    rng = np.random.default_rng(0)
    arrays = {"w1": rng.standard_normal((8, 16)) * 0.3, "w2": rng.standard_normal((16, 6)) * 0.3,
              "lw": rng.standard_normal((1, 16, 6)) * 0.3, "lr": rng.standard_normal((1, 16, 4)) * 0.3,
              "lb": np.zeros((1, 32)), "h0": np.zeros((1, 1, 4)), "c0": np.zeros((1, 1, 4))}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["z"]), helper.make_node("Transpose", ["z"], ["t"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["t", "lw", "lr", "lb", "", "h0", "c0"], ["s"], hidden_size=4),
             helper.make_node("Squeeze", ["s", "axis1"], ["y"])]
    g = helper.make_graph(nodes, "recurrent", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "T"])], inits)
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_a_batch_1_recurrent_model_with_a_misdeclared_time_major_output_prunes(tmp_path):
    """Trained one row at a time: each row's (5, 1, 4) output joins the batch's on axis 1, and the training
    targets take the rank the model gives, not the declared one."""
    from onnxoto.graph.load import read_model
    from onnxoto.prune import PruneOptions, prune
    path = fixed_batch_recurrent_model(str(tmp_path / "rnn.onnx"))
    assert graph.row_axes(read_model(path)) == {"y": 1}
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(1).standard_normal((16, 5, 8)).astype(np.float32))
    lines = []
    result = prune(path, str(tmp_path / "x.npz"), str(tmp_path / "small.onnx"), log=lines.append,
                   options=PruneOptions(epochs=2, batch_size=8, target_sparsity=0.5, base="adamw", loss="distill"))
    assert any("output y is declared 1xT but the model gives 5x1x4" in line for line in lines), lines
    assert any("output y axis 1" in line for line in lines), lines
    assert result.verified and result.pruned["params"] < result.dense["params"]
