"""The backbone property (DESIGN.md §5) on every model in models/: zeroing a group's ZIGs and cutting
them give the same outputs, for every prunable group, on random subsets, with several seeds."""
import glob
import os

import numpy as np
import pytest

from onnxoto import graph, groups, verify
from onnxoto.surgery import cut
from onnxoto.verify.certify import run

MODELS = os.path.join(os.path.dirname(__file__), "..", "models")
# Files that can't run by construction: a custom-domain op; an export whose shapes were baked at trace time.
NOT_RUNNABLE = {"edge_custom_op.onnx", "transformer_nnlayer.onnx"}
ZOO = sorted(p for p in glob.glob(os.path.join(MODELS, "*.onnx")) if os.path.basename(p) not in NOT_RUNNABLE)


@pytest.fixture(scope="module", params=ZOO, ids=os.path.basename)
def analysis(request):
    return groups.analyze(graph.load(request.param, strict=True))


@pytest.mark.parametrize("seed", [0, 1])
def test_cutting_equals_zeroing_on_every_group(analysis, seed):
    cert = verify.certify(analysis, subsets=2, seed=seed)
    assert cert.passed, cert.to_json()["failures"]
    assert cert.groups_verified == len(analysis.prunable)


def test_cost_model_predicts_the_cut_file(analysis):
    rng = np.random.default_rng(0)
    keep = {g.id: rng.random(g.num_zigs) < 0.6 for g in analysis.prunable}
    for g in analysis.prunable:
        keep[g.id][rng.integers(g.num_zigs)] = True  # never all of a group
    cut_model = graph.Model.from_proto(cut(analysis.model, analysis.groups, keep))
    assert groups.model_cost(cut_model) == analysis.predict_cost(keep)


def test_reanalysis_of_a_cut_model_gives_reduced_groups(analysis):
    if not analysis.prunable:
        pytest.skip("nothing prunable")
    g = max(analysis.prunable, key=lambda g: g.num_zigs)
    keep = {g.id: np.arange(g.num_zigs) >= g.num_zigs // 2}
    cut_model = graph.from_proto(cut(analysis.model, analysis.groups, keep), "cut")
    after = groups.analyze(cut_model)
    sizes_before = sorted(x.num_zigs for x in analysis.groups)
    sizes_after = sorted(x.num_zigs for x in after.groups)
    assert len(after.groups) == len(analysis.groups)
    assert sum(sizes_before) - sum(sizes_after) == g.num_zigs - keep[g.id].sum()


def test_cut_model_keeps_interface(analysis):
    g = analysis.prunable[0] if analysis.prunable else None
    if g is None or g.num_zigs < 2:
        pytest.skip("nothing prunable")
    keep = {g.id: np.arange(g.num_zigs) != 0}
    proto = cut(analysis.model, analysis.groups, keep)
    cut_model = graph.Model.from_proto(proto)
    assert cut_model.input_names == analysis.model.input_names
    assert cut_model.output_names == analysis.model.output_names
    for name in cut_model.output_names:
        assert cut_model.shapes[name] == analysis.model.shapes[name]
    feeds = verify.random_inputs(analysis.model, np.random.default_rng(0))
    assert all(np.isfinite(o).all() for o in run(proto, feeds))
