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
