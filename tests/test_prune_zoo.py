"""Every model in models/ trains in onnxruntime-training and prunes end to end (distillation from random
inputs, a few real steps): channels cut, residual branches erased, the result certified."""
import glob
import os

import numpy as np
import onnx
import pytest

from onnxoto import graph, groups
from onnxoto.prune import PruneOptions, prune

MODELS = os.path.join(os.path.dirname(__file__), "..", "models")
ZOO = sorted(p for p in glob.glob(os.path.join(MODELS, "*.onnx")) if not p.endswith("edge_custom_op.onnx"))


def random_data(model, path, rows=32, seq=16):
    """Inputs of the model's own shapes and dtypes (symbolic: `rows` samples, sequences of `seq`)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for name in model.input_names:
        shape = [d if isinstance(d, int) else (rows if k == 0 else seq) for k, d in enumerate(model.shapes[name])]
        dtype = np.dtype(np.int64 if model.dtypes[name] == 7 else np.uint8 if model.dtypes[name] == 2 else np.float32)
        if dtype == np.int64:
            arrays[name] = rng.integers(0, 100, shape).astype(dtype)
        elif dtype == np.uint8:
            arrays[name] = rng.integers(0, 256, shape).astype(dtype)
        else:
            arrays[name] = rng.standard_normal(shape).astype(dtype)
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("path", ZOO, ids=os.path.basename)
def test_every_zoo_model_prunes(path, tmp_path):
    data = random_data(graph.load(path), tmp_path / "data.npz")
    result = prune(path, data, str(tmp_path / "pruned.onnx"), log=lambda s: None,
                   options=PruneOptions(epochs=1, batch_size=16, target_sparsity=0.3, base="adamw", erase=0.5))
    assert result.verified
    assert result.pruned["flops"] < result.dense["flops"]
    if len(groups.analyze(graph.load(path)).erasable) >= 2:  # erase=0.5 of one branch rounds to none
        assert result.erased
        nodes = {n.name for n in onnx.load(tmp_path / "pruned.onnx").graph.node}
        assert not nodes & {name for unit in result.erased for name in unit["nodes"]}


def test_unet_loses_its_whole_lower_half(tmp_path):
    # both skip Concats' deep branches erased: the encoder's second level, the middle and both
    # up-convolutions go, leaving the top level's convolutions alone (OTOv3 erasing a sub-network)
    path = os.path.join(MODELS, "unet_dynamo.onnx")
    data = random_data(graph.load(path), tmp_path / "data.npz", rows=48)
    out = tmp_path / "erased.onnx"
    result = prune(path, data, str(out), log=lambda s: None,
                   options=PruneOptions(epochs=2, batch_size=16, target_sparsity=0.2, base="adamw", erase=0.99))
    assert result.verified and len(result.erased) == 1  # the inner level is inside the outer one
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert ops == {"Conv", "Relu"}, ops
    outer = result.erased[0]["flops"]
    # the lower half's channels are gone with it: they count towards the group sparsity reached
    assert result.group_sparsity >= 0.2
    assert len(result.erased[0]["nodes"]) == 17 and outer > 0.6 * result.dense["flops"]
    assert result.pruned["flops"] <= result.dense["flops"] - outer
