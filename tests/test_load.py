"""Loading: bad input gives one ModelError line naming the problem; odd but valid models load and normalize."""
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edge_helpers import Net, analyze_proto, run
from onnxoto.errors import ModelError
from onnxoto.graph import from_proto, load
from onnxoto import graph, groups, verify
from onnxoto.groups import analyze
from onnxoto.surgery import cut

MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
EDGE = os.path.join(MODELS, "edge_bn_unfolded.onnx")


def load_error(path, **kwargs):
    """The ModelError load raises, checked to be one line with no chained traceback."""
    with pytest.raises(ModelError) as info:
        load(path, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message, repr(message)
    assert "Traceback" not in message
    error = info.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__), "chained traceback"
    return message


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def small_model(opset=17, ir_version=8):
    n = Net(opset=opset)
    h = n.op("Relu", [n.conv(n.input(), 3, 4, name="conv1")])
    n.conv(h, 4, 2, name="conv2")
    n.nodes[-1].output[0] = "y"
    return n.model("y", ir_version=ir_version)


# --- bad files -----------------------------------------------------------------------------------

def test_random_bytes(tmp_path):
    path = write(tmp_path, "noise.onnx", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert "noise.onnx" in load_error(path)


def test_text_file(tmp_path):
    path = write(tmp_path, "notes.onnx", b"This is a README, not a model.\nSecond line.\n")
    message = load_error(path)
    assert "notes.onnx" in message and "ONNX" in message


def test_empty_file(tmp_path):
    assert "empty" in load_error(write(tmp_path, "empty.onnx", b""))


def test_truncated_model(tmp_path):
    data = open(EDGE, "rb").read()
    message = load_error(write(tmp_path, "half.onnx", data[:len(data) // 2]))
    assert "half.onnx" in message


def test_missing_file(tmp_path):
    message = load_error(tmp_path / "nowhere.onnx")
    assert "nowhere.onnx" in message and "no such file" in message


def test_directory_is_not_a_model(tmp_path):
    assert "no such file" in load_error(tmp_path)


def test_opset_too_new(tmp_path):
    model = small_model()
    model.opset_import[0].version = 99
    path = tmp_path / "future.onnx"
    onnx.save(model, path)
    message = load_error(path)
    assert "opset 99" in message


# --- external data -------------------------------------------------------------------------------

def _with_external(tmp_path, location, write_data=True):
    """A model whose conv1.weight lives in `location` (relative to the model file or absolute)."""
    model = small_model()
    tensor = next(t for t in model.graph.initializer if t.name == "conv1.weight")
    raw = numpy_helper.to_array(tensor).tobytes()
    target = location if os.path.isabs(location) else os.path.join(tmp_path / "model", location)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if write_data:
        with open(target, "wb") as f:
            f.write(raw)
    tensor.ClearField("raw_data")
    del tensor.float_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        tensor.external_data.append(onnx.StringStringEntryProto(key=key, value=value))
    path = tmp_path / "model" / "m.onnx"
    os.makedirs(path.parent, exist_ok=True)
    onnx.save(model, path)
    return path


def test_external_data_escaping_the_folder(tmp_path):
    message = load_error(_with_external(tmp_path, "../secret.bin"))
    assert "../secret.bin" in message and "outside" in message


def test_external_data_at_an_absolute_path(tmp_path):
    secret = str(tmp_path / "elsewhere" / "secret.bin")
    message = load_error(_with_external(tmp_path, secret))
    assert "outside" in message


def test_external_data_file_missing(tmp_path):
    message = load_error(_with_external(tmp_path, "weights.bin", write_data=False))
    assert "weights.bin" in message and "missing" in message


def test_external_data_inside_the_folder_loads(tmp_path):
    model = load(_with_external(tmp_path, "data/weights.bin"))
    weight = numpy_helper.to_array(model.initializers["conv1.weight"])
    expected = numpy_helper.to_array(next(t for t in small_model().graph.initializer if t.name == "conv1.weight"))
    assert np.array_equal(weight, expected)


# --- domains and versions ------------------------------------------------------------------------

CUSTOM = os.path.join(MODELS, "edge_custom_op.onnx")


def test_unknown_domain_refused_when_strict():
    message = load_error(CUSTOM, strict=True)
    assert "com.example" in message and "Foo" in message


def test_unknown_domain_is_a_barrier_when_not_strict():
    a = analyze(load(CUSTOM, strict=False))
    reasons = {g.id: g.reason for g in a.groups}
    assert reasons["conv1.weight:0"] == "no rule for com.example.Foo"


def test_opset_9_gemm_is_converted_up(tmp_path):
    n = Net(opset=9)
    h = n.op("Relu", [n.linear(n.input(shape=[2, 16]), 16, 8, name="fc1")])
    n.linear(h, 8, 4, name="fc2")
    n.nodes[-1].output[0] = "y"
    proto = n.model("y", ir_version=4)
    path = tmp_path / "old.onnx"
    onnx.save(proto, path)
    model = load(path)
    opset = next(i.version for i in model.proto.opset_import if i.domain in ("", "ai.onnx"))
    assert opset >= 11
    assert [node.op_type for node in model.graph.node].count("Gemm") == 2
    feed = {"x": np.random.default_rng(0).normal(size=(2, 16)).astype(np.float32)}
    assert np.allclose(run(model.proto, feed)["y"], run(proto, feed)["y"], atol=1e-5)


def _opset_9_cnn():
    """Conv, BatchNormalization (opset 9 form), Dropout with ratio, Upsample, Flatten, Gemm with C."""
    n = Net(opset=9)
    h = n.conv(n.input(shape=("N", 3, 8, 8)), 3, 4, name="conv1")
    stats = [n.weight("bn.scale", (4,), offset=1.0), n.weight("bn.bias", (4,)), n.weight("bn.mean", (4,)),
             n.const("bn.var", np.linspace(0.5, 2, 4).astype(np.float32))]
    h = n.op("Dropout", [n.op("Relu", [n.op("BatchNormalization", [h] + stats)])], ratio=0.1)
    h = n.op("Upsample", [h, n.const("scales", np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    h = n.op("Flatten", [n.op("GlobalAveragePool", [h])])
    n.op("Gemm", [h, n.weight("fc.weight", (5, 4)), n.weight("fc.bias", (5,))], outputs=["y"], transB=1)
    return n.model("y", ir_version=4)


def test_opset_9_cnn_is_converted_and_computes_the_same(tmp_path):
    proto = _opset_9_cnn()
    path = tmp_path / "old_cnn.onnx"
    onnx.save(proto, path)
    model = load(path)
    ops = [node.op_type for node in model.graph.node]
    assert "Upsample" not in ops and "Dropout" not in ops and "Resize" in ops
    feed = {"x": np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)}
    assert np.allclose(run(model.proto, feed)["y"], run(proto, feed)["y"], atol=1e-5)
    assert analyze(model).group("conv1.weight:0").prunable


def test_normalized_value_info_names_only_tensors_that_exist(tmp_path):
    model = from_proto(_opset_9_cnn(), "old_cnn")
    exists = {o for node in model.graph.node for o in node.output} | set(model.input_names) | set(model.initializers)
    assert [v.name for v in model.graph.value_info if v.name not in exists] == []


def test_ir_version_11_is_brought_down(tmp_path):
    path = tmp_path / "ir11.onnx"
    onnx.save(small_model(ir_version=11), path)
    model = load(path)
    assert model.proto.ir_version <= 10
    run(model.proto)


# --- sharing -------------------------------------------------------------------------------------

def test_identity_shared_zero_bias_is_unshared():
    model = load(os.path.join(MODELS, "edge_shared_zero_bias.onnx"))
    convs = {node.name: node for node in model.graph.node if node.op_type == "Conv"}
    assert not any(node.op_type == "Identity" for node in model.graph.node)
    bias1, bias2 = convs["conv1"].input[2], convs["conv2"].input[2]
    assert bias1 != bias2
    assert bias1 in model.initializers and bias2 in model.initializers
    a = analyze(model)
    assert [g.id for g in a.groups if g.slices[0].name == "conv1.weight" and g.slices[0].axis == 0] != \
           [g.id for g in a.groups if g.slices[0].name == "conv2.weight" and g.slices[0].axis == 0]


def test_uniform_initializer_shared_without_identity_is_unshared():
    """The same economy without Identity nodes: two convs name one all-zero bias directly."""
    n = Net()
    zero = n.const("zero_bias", np.zeros(4, np.float32))
    h = n.op("Conv", ["x", n.weight("c1.weight", (4, 3, 1, 1)), zero], name="c1")
    n.inputs.append(helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8]))
    h = n.op("Conv", [n.op("Relu", [h]), n.weight("c2.weight", (4, 4, 1, 1)), zero], name="c2")
    n.op("Conv", [n.op("Relu", [h]), n.weight("c3.weight", (2, 4, 1, 1))], outputs=["y"], name="c3")
    a = analyze_proto(n.model("y"))
    c1 = next(g for g in a.groups if any(s.name == "c1.weight" and s.axis == 0 for s in g.slices))
    assert not any(s.name == "c2.weight" and s.axis == 0 for s in c1.slices)
    assert c1.prunable


def test_tied_weight_stays_one_initializer():
    model = load(os.path.join(MODELS, "edge_tied_weight.onnx"))
    readers = [node.name for node in model.graph.node if "tied.weight" in node.input]
    assert sorted(readers) == ["matmul1", "matmul2"]
    assert [t.name for t in model.graph.initializer].count("tied.weight") == 1


def test_constant_nodes_become_initializers():
    model = load(os.path.join(MODELS, "edge_constant_weights.onnx"))
    assert not any(node.op_type == "Constant" for node in model.graph.node)
    assert {"conv1.weight", "conv2.weight", "fc.weight"} <= set(model.initializers)


def test_loading_writes_nothing(tmp_path):
    source = tmp_path / "m.onnx"
    shutil.copy(EDGE, source)
    load(source)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 0.4, 0.6, 0.75, 0.9, 0.99])
def test_truncated_anywhere_is_a_model_error(tmp_path, fraction):
    data = open(os.path.join(MODELS, "edge_sigmoid_gate.onnx"), "rb").read()
    load_error(write(tmp_path, "cut.onnx", data[:int(len(data) * fraction)]))


def _if_reading_an_outer_tensor():
    """conv1 (8 channels) -> relu -> conv2 (4) -> c; an If whose branches read c from the outer graph."""
    net = Net()
    x = net.input("x", ("N", 3, 8, 8))
    cond = net.input("cond", (), dtype=onnx.TensorProto.BOOL)
    c = net.conv(net.op("Relu", [net.conv(x, 3, 8, name="conv1")]), 8, 4, name="conv2")
    out = helper.make_tensor_value_info("branch_out", onnx.TensorProto.FLOAT, None)
    then = helper.make_graph([helper.make_node("Relu", [c], ["branch_out"])], "then", [], [out])
    other = helper.make_graph([helper.make_node("Neg", [c], ["branch_out"])], "else", [], [out])
    y = net.op("If", [cond], name="y", then_branch=then, else_branch=other)
    return net.model(y, opset=17)


def test_tensors_a_subgraph_reads_stay_alive_and_pinned():
    analysis = analyze_proto(_if_reading_an_outer_tensor(), "if")
    by_id = {g.id: g for g in analysis.groups}
    assert not by_id["conv2.weight:0"].prunable  # the If body reads its channels: a barrier
    assert by_id["conv1.weight:0"].prunable
    # cutting conv1's channels keeps conv2, which only the If body reads
    feeds = {"x": np.ones((2, 3, 8, 8), np.float32), "cond": np.array(True)}
    cert = verify.certify(analysis, subsets=2)
    assert cert.passed and cert.groups_verified == 1
    keep = groups.keep_all(analysis.groups)
    keep["conv1.weight:0"][:4] = False
    cut_proto = cut(analysis.model, analysis.groups, keep)
    assert "conv2" in {n.name for n in cut_proto.graph.node}
    assert graph.run(cut_proto, feeds)[0].shape == (2, 4, 8, 8)


def _if_on_a_known_size(seed=0):
    """Silero VAD's decoder in small: conv1 -> Relu -> h; If (the last dim of h == 8) then conv2(h) else -h,
    the branch reading h from the outer graph. H and W are symbolic: the size is known once they are bound."""
    n = Net(opset=17, seed=seed)
    x = n.input("x", ("N", 3, "H", "W"))
    h = n.op("Relu", [n.conv(x, 3, 6, name="conv1")])
    last = n.op("Gather", [n.op("Shape", [h]), n.ints("last", [-1])], axis=0)
    cond = n.op("Squeeze", [n.op("Equal", [last, n.ints("eight", [8])])])
    w = numpy_helper.from_array(np.random.default_rng(seed).standard_normal((4, 6, 1, 1)).astype(np.float32) * 0.3,
                                "conv2.weight")
    then = helper.make_graph([helper.make_node("Conv", [h, "conv2.weight"], ["y_then"], name="conv2")], "then", [],
                             [helper.make_tensor_value_info("y_then", onnx.TensorProto.FLOAT, None)], [w])
    other = helper.make_graph([helper.make_node("Slice", [h, "s0", "s4", "s1"], ["y_else"], name="first4")], "else",
                              [], [helper.make_tensor_value_info("y_else", onnx.TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array([v], np.int64), f"s{v}") for v in (0, 4, 1)])
    n.nodes.append(helper.make_node("If", [cond], ["y"], name="if_size", then_branch=then, else_branch=other))
    return n.model("y")


def test_an_if_on_a_size_shape_inference_knows_is_inlined_and_computes_the_same(tmp_path):
    path = tmp_path / "if.onnx"
    onnx.save(_if_on_a_known_size(), path)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    kept = load(path, strict=True)  # H, W symbolic: the If stays
    assert "If" in [n.op_type for n in kept.proto.graph.node]
    bound = load(path, strict=True, input_shapes={"x": (-1, 3, 8, 8)})
    ops = [n.op_type for n in bound.proto.graph.node]
    assert "If" not in ops and "Conv" in ops and "Slice" not in ops  # the then branch, taken at W = 8
    np.testing.assert_array_equal(graph.run(bound.proto, {"x": x})[0], graph.run(_if_on_a_known_size(), {"x": x})[0])
    analysis = analyze(bound)
    assert {g.id: g.prunable for g in analysis.groups}["conv1.weight:0"]  # no If left to pin it
    assert verify.certify(analysis, subsets=2).passed


def _weights_also_inputs(ir_version, folded=False):
    """Conv -> Relu -> Conv whose weights are initializers that are also graph inputs, as IR 3 requires and
    exporters before it (Caffe2, PyTorch before 1.6) write; `folded`: the second weight made by a
    ConstantOfShape node (Caffe2's light files), so normalization folds a constant; plus an unused counter."""
    from onnx import TensorProto
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
               numpy_helper.from_array(np.zeros(8, np.float32), "b1"),
               numpy_helper.from_array(np.array(0, np.int64), "num_batches_tracked")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"])]
    if folded:
        weights.append(numpy_helper.from_array(np.array([4, 8, 1, 1], np.int64), "w2_shape"))
        nodes.insert(0, helper.make_node("ConstantOfShape", ["w2_shape"], ["w2"],
                                         value=numpy_helper.from_array(np.array([0.5], np.float32))))
    else:
        weights.append(numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in weights]
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                          weights)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = ir_version
    return model


@pytest.mark.parametrize("ir_version, folded", [(3, True), (4, False), (4, True)])
def test_weights_listed_as_inputs_are_weights_and_the_model_prunes(tmp_path, ir_version, folded):
    from onnxoto.prune import PruneOptions, prune
    path = tmp_path / "old.onnx"
    onnx.save(_weights_also_inputs(ir_version, folded), str(path))
    model = load(str(path), strict=True)
    assert model.input_names == ["x"] and model.proto.ir_version >= 4
    onnx.checker.check_model(model.proto)
    cert = verify.certify(analyze(model), subsets=1)
    assert cert.groups_verified == 1 and cert.passed
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(1).standard_normal((8, 3, 8, 8)).astype(np.float32))
    result = prune(str(path), str(tmp_path / "x.npz"), str(tmp_path / "small.onnx"), log=lambda s: None,
                   options=PruneOptions(epochs=1, batch_size=8, target_sparsity=0.5))
    assert result.verified and result.pruned["params"] < result.dense["params"]


def test_a_model_without_the_default_operator_set_is_one_line_naming_it(tmp_path):
    from onnx import TensorProto
    g = helper.make_graph([helper.make_node("Normalizer", ["x"], ["y"], domain="ai.onnx.ml", norm="L2")], "ml",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "ml.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("ai.onnx.ml", 3)]), str(path))
    message = load_error(str(path))
    assert message.startswith("ml.onnx: ") and "default ONNX operator set" in message and "ai.onnx.ml" in message
