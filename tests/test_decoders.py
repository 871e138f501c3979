"""Decoder LLMs (models/decoder_*.onnx, tools/make_decoders.py): grouped-query attention, SwiGLU, RMSNorm,
rotary embeddings, with and without a KV cache. A KV head with its query heads is one ZIG; cutting one
gives the zeroed model's outputs, cache included (--allow-io-change)."""
import glob
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxoto import graph, groups, verify
from onnxoto.groups import removed_positions
from onnxoto.prune import provenance
from onnxoto.surgery import cut, zero_out
from onnxoto.verify.certify import run

MODELS = os.path.join(os.path.dirname(__file__), "..", "models")
DECODERS = sorted(glob.glob(os.path.join(MODELS, "decoder_*.onnx")))
LAYERS, HEADS, KV_HEADS, HEAD_DIM, INTERMEDIATE, VOCAB = 2, 8, 2, 8, 128, 256  # tools/make_decoders.py SMALL


def _is_cache(path):
    return "cache" in os.path.basename(path)


@pytest.fixture(scope="module", params=DECODERS, ids=os.path.basename)
def analysis(request):
    return groups.analyze(graph.load(request.param, strict=True), allow_io_change=_is_cache(request.param))


def _kv_groups(analysis):
    return [g for g in analysis.prunable if g.num_zigs == KV_HEADS]


def test_the_zoo_has_every_kind():
    names = {os.path.basename(p) for p in DECODERS}
    assert {"decoder_llama.onnx", "decoder_llama_dynamo.onnx", "decoder_llama_cache.onnx", "decoder_qwen2.onnx",
            "decoder_llama_tied.onnx", "decoder_llama_mask.onnx", "decoder_qwen2_cache.onnx",
            "decoder_llama_cache_dynamo.onnx"} <= names
    assert all(os.path.getsize(p) < 1_100_000 for p in DECODERS)


def test_a_kv_head_and_its_query_heads_are_one_zig(analysis):
    """q/k/v rows of one KV group (4 query heads of 8, one KV head of 8) and o_proj's columns of those heads."""
    kv = _kv_groups(analysis)
    assert len(kv) == LAYERS
    for g in kv:
        widths = sorted(s.index.shape[1] for s in g.slices if s.name in analysis.model.initializers
                        and len(analysis.model.shapes[s.name]) == 2)
        group_width = HEADS // KV_HEADS * HEAD_DIM
        assert widths.count(group_width) == 2  # q_proj columns, o_proj rows
        assert widths.count(HEAD_DIM) == 2  # k_proj, v_proj columns
        assert {s.role for s in g.slices} >= {"producer", "consumer"}


def test_mlp_channels_go_through_the_swiglu_mul(analysis):
    mlp = [g for g in analysis.prunable if g.num_zigs == INTERMEDIATE]
    assert len(mlp) == LAYERS
    for g in mlp:
        assert sorted(s.role for s in g.slices if len(analysis.model.shapes[s.name]) == 2) == \
            ["consumer", "producer", "producer"]  # down_proj reads what gate_proj and up_proj make


def test_rmsnorm_pins_the_hidden_size_with_its_reason(analysis):
    hidden = [g for g in analysis.groups if g.num_zigs == HEADS * HEAD_DIM and not g.prunable]
    assert hidden and any("RMSNorm" in g.reason for g in hidden)


def test_logits_stay_whole_even_when_io_may_change(analysis):
    """The vocabulary reaches the logits output alone (no input feeds it back): never cut."""
    vocab = [g for g in analysis.groups if g.num_zigs == VOCAB]
    assert vocab and not any(g.prunable for g in vocab)
    assert any("reaches graph output 'logits'" in g.reason or "selects along" in g.reason for g in vocab)


@pytest.mark.parametrize("seed", [0, 1])
def test_every_decoder_certifies(analysis, seed):
    cert = verify.certify(analysis, subsets=2, seed=seed)
    assert cert.passed, cert.to_json()["failures"]
    assert cert.groups_verified == len(analysis.prunable) == 2 * LAYERS


def test_a_cache_pins_kv_groups_without_the_flag():
    path = os.path.join(MODELS, "decoder_llama_cache.onnx")
    pinned = groups.analyze(graph.load(path, strict=True))
    assert not _kv_groups(pinned)
    reasons = [g.reason for g in pinned.groups if "past_key" in g.reason or "past_value" in g.reason]
    assert len(reasons) == LAYERS


@pytest.mark.parametrize("name", ["decoder_llama", "decoder_qwen2_dynamo", "decoder_llama_cache", "decoder_qwen2_cache",
                                  "decoder_llama_cache_dynamo"])
def test_after_a_cut_outputs_equal_the_zeroed_models(name):
    """One KV group of layer 0 and a third of every MLP cut: outputs (and the kept part of the cache)
    equal the zeroed model's, on inputs with a past of 3 and 5 new tokens; the dense model differs."""
    model = graph.load(os.path.join(MODELS, f"{name}.onnx"), strict=True)
    analysis = groups.analyze(model, allow_io_change=True)
    rng = np.random.default_rng(0)
    keep = {}
    for g in analysis.prunable:
        mask = np.ones(g.num_zigs, bool)
        mask[rng.choice(g.num_zigs, size=max(1, g.num_zigs // 3), replace=False)] = False
        keep[g.id] = mask
    gone = removed_positions(analysis.groups, keep)
    feeds = {"input_ids": rng.integers(0, 256, (2, 5)).astype(np.int64)}
    for name_in in model.input_names[1:]:
        feeds[name_in] = rng.standard_normal((2, KV_HEADS, 3, HEAD_DIM)).astype(np.float32)
    zero_feeds, cut_feeds = verify.io_feeds(feeds, gone)
    proto = cut(model, analysis.groups, keep)
    zeroed = verify.kept_outputs(run(zero_out(model, analysis.groups, keep), zero_feeds), model.output_names, gone)
    pruned = run(proto, cut_feeds)
    dense = verify.kept_outputs(run(model.proto, zero_feeds), model.output_names, gone)
    for z, p, d in zip(zeroed, pruned, dense):
        assert z.shape == p.shape
        np.testing.assert_allclose(p, z, atol=1e-5 * np.abs(z).max())
    assert np.abs(dense[0] - pruned[0]).max() > 1e-3  # the cut removed something that mattered
    if _is_cache(name):
        heads = provenance.num_key_value_heads(provenance.io_changes(model.proto, proto))
        assert heads == [KV_HEADS - 1] + [KV_HEADS - 1] * (LAYERS - 1)
        assert pruned[1].shape == (2, KV_HEADS - 1, 8, HEAD_DIM)  # present = past 3 + 5 new tokens


def _cache_step():
    """x (N, S, 16) -> k = x @ W as 2 heads of 8 -> present = Concat(past, k) over the positions: the
    class of a KV cache, a group reaching a graph input and a graph output together."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "W")
    shape = numpy_helper.from_array(np.array([0, 0, 2, 8], np.int64), "heads")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["k"]),
             helper.make_node("Reshape", ["k", "heads"], ["k4"]),
             helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 1, 3]),
             helper.make_node("Concat", ["past", "kt"], ["present"], axis=2),
             helper.make_node("ReduceSum", ["present", "axes"], ["y"], keepdims=0)]
    axes = numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes")
    g = helper.make_graph(nodes, "cache_step",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "S", 16]),
                           helper.make_tensor_value_info("past", TensorProto.FLOAT, ["N", 2, "P", 8])],
                          [helper.make_tensor_value_info("present", TensorProto.FLOAT, ["N", 2, "T", 8]),
                           helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])], [w, shape, axes])
    return graph.from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), "cache_step")


def test_a_cache_group_is_prunable_only_with_io_change():
    model = _cache_step()
    (pinned,) = [g for g in groups.analyze(model).groups if g.num_zigs == 2]
    assert not pinned.prunable and "past" in pinned.reason
    analysis = groups.analyze(model, allow_io_change=True)
    (g,) = [g for g in analysis.prunable if g.num_zigs == 2]
    assert g.io == ["past", "present"]
    cert = verify.certify(analysis, subsets=1)
    assert cert.passed and cert.groups_verified == 1


def test_prune_on_token_ids_with_an_attention_mask(tmp_path):
    """`prune` on an .npz of input_ids and attention_mask (left padding), distilled from the dense model:
    KV groups and MLP channels cut, the cut certified against the trained model on the data."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, (32, 12)).astype(np.int64)
    mask = np.ones_like(ids)
    for row, pad in enumerate(rng.integers(0, 4, len(ids))):
        mask[row, :pad] = 0
    np.savez(tmp_path / "tokens.npz", input_ids=ids, attention_mask=mask)
    from onnxoto.prune import PruneOptions, prune
    result = prune(os.path.join(MODELS, "decoder_llama_mask.onnx"), str(tmp_path / "tokens.npz"),
                   str(tmp_path / "pruned.onnx"), log=lambda s: None,
                   options=PruneOptions(epochs=2, batch_size=8, target_sparsity=0.3, base="adamw"))
    assert result.verified and result.settings["loss"] == "distill"
    cut_widths = {g["channels"]: g["kept"] for g in result.groups if g["kept"] < g["channels"]}
    assert INTERMEDIATE in cut_widths
    pruned = graph.load(str(tmp_path / "pruned.onnx"))
    assert pruned.input_names == ["input_ids", "attention_mask"]


def test_prune_with_a_cache_writes_the_new_cache_shapes(tmp_path):
    """`prune --allow-io-change` on a cached decoder: certified on data whose past holds real values
    (fed zero where cut heads' cache goes), the new shapes in the result and the model's metadata."""
    rng = np.random.default_rng(0)
    data = {"input_ids": rng.integers(0, VOCAB, (32, 6)).astype(np.int64)}
    for i in range(LAYERS):
        for kind in ("key", "value"):
            data[f"past_{kind}.{i}"] = rng.standard_normal((32, KV_HEADS, 3, HEAD_DIM)).astype(np.float32)
    np.savez(tmp_path / "cache.npz", **data)
    from onnxoto.prune import PruneOptions, prune
    out = tmp_path / "pruned.onnx"
    result = prune(os.path.join(MODELS, "decoder_llama_cache.onnx"), str(tmp_path / "cache.npz"), str(out),
                   log=lambda s: None, options=PruneOptions(epochs=2, batch_size=8, target_sparsity=0.5,
                                                            base="adamw", allow_io_change=True))
    assert result.verified
    kept_kv = [g["kept"] for g in result.groups if g["channels"] == KV_HEADS]
    assert min(kept_kv) < KV_HEADS  # half of all ZIGs: the KV groups lose heads too (seeded)
    stamped = provenance.read(onnx.load(out))
    assert stamped["num_key_value_heads"] == kept_kv
    assert result.io_shapes["past_key.0"]["after"][1] == kept_kv[0]
    model = graph.load(str(out))
    assert [model.shapes[f"past_key.{i}"][1] for i in range(LAYERS)] == kept_kv


def test_group_targets_remove_a_quarter_of_kv_groups_and_30_percent_of_mlp(tmp_path):
    """--group-target: KV groups (layer '*self_attn*') and MLP channels ('*mlp*') each with their own
    sparsity, counted over all the groups a glob matches; nothing else is cut."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tokens.npz", input_ids=rng.integers(0, VOCAB, (32, 8)).astype(np.int64))
    from onnxoto.prune import PruneOptions, prune
    result = prune(os.path.join(MODELS, "decoder_llama.onnx"), str(tmp_path / "tokens.npz"),
                   str(tmp_path / "pruned.onnx"), log=lambda s: None,
                   options=PruneOptions(epochs=2, batch_size=8, base="adamw",
                                        group_targets={"*self_attn*": 0.25, "*mlp*": 0.3}))
    assert result.verified
    removed = {}
    for g in result.groups:
        removed[g["channels"]] = removed.get(g["channels"], 0) + g["channels"] - g["kept"]
    assert removed == {KV_HEADS: 1, INTERMEDIATE: round(0.3 * INTERMEDIATE * LAYERS)}


def test_a_group_target_that_matches_nothing_is_refused(tmp_path):
    np.savez(tmp_path / "tokens.npz", input_ids=np.zeros((8, 8), np.int64))
    from onnxoto.errors import OptionError
    from onnxoto.prune import PruneOptions, prune
    with pytest.raises(OptionError, match="matches no prunable group"):
        prune(os.path.join(MODELS, "decoder_llama.onnx"), str(tmp_path / "tokens.npz"), str(tmp_path / "p.onnx"),
              log=lambda s: None, options=PruneOptions(epochs=1, batch_size=8, group_targets={"*nothing*": 0.5}))
