"""The certificate can fail: broken analyses are caught, including behind a blind output layer."""
import json
import os

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import numpy_helper

from onnxoto import graph, groups, verify
from onnxoto.cli import main
from onnxoto.surgery import cut as cut_model, zero_units
from onnxoto.verify.certify import check_unit, compared_tensors

from edge_helpers import Net

MODELS = os.path.join(os.path.dirname(__file__), "..", "models")


def _without_bias_slices(analysis):
    """An analysis that forgets to zero the biases: zeroing no longer silences the channel."""
    for g in analysis.prunable:
        g.slices = [s for s in g.slices if not (s.role == groups.PRODUCER and len(analysis.model.shapes[s.name]) == 1)]
    return analysis


def test_certificate_fails_when_producers_are_missing():
    analysis = _without_bias_slices(groups.analyze(graph.load(os.path.join(MODELS, "vgg_bnfolded.onnx"))))
    cert = verify.certify(analysis, subsets=2)
    assert not cert.passed
    assert cert.max_rel_diff > verify.TOLERANCE


def test_blind_output_layer_still_checks_what_feeds_it(tmp_path):
    """Zero the classifier: logits are 0 for M0 and M1 alike, but the features feeding it differ."""
    model = onnx.load(os.path.join(MODELS, "vgg_bnfolded.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    head = producers[model.graph.output[0].name]
    for init in model.graph.initializer:
        if init.name in head.input:
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name))
    path = tmp_path / "blind.onnx"
    onnx.save(model, path)
    analysis = _without_bias_slices(groups.analyze(graph.load(path)))
    assert not verify.certify(analysis, subsets=2).passed


def test_verify_command_certifies_and_writes_json(tmp_path):
    out = tmp_path / "cert.json"
    result = CliRunner().invoke(main, ["verify", os.path.join(MODELS, "resnet.onnx"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "verified 6/6 prunable groups, 5/5 erasable branches" in result.output
    cert = json.loads(out.read_text())
    assert {"groups_total", "groups_prunable", "groups_verified", "max_rel_diff", "failures"} <= set(cert)
    assert cert["groups_verified"] == cert["groups_prunable"] == 6 and cert["failures"] == []


def test_analyze_command_table_and_json(tmp_path):
    out = tmp_path / "groups.json"
    result = CliRunner().invoke(main, ["analyze", os.path.join(MODELS, "densenet.onnx"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "groups prunable" in result.output
    data = json.loads(out.read_text())
    assert {"model", "params", "flops", "groups"} <= set(data)
    assert {"id", "channels", "prunable", "reason", "params", "flops", "initializers"} <= set(data["groups"][0])
    assert any(not g["prunable"] and "graph input" in g["reason"] for g in data["groups"])


def test_bad_model_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not protobuf \x00\xff" * 10)
    for command in ("analyze", "verify"):
        result = CliRunner().invoke(main, [command, str(bad)])
        assert result.exit_code == 2
        assert result.output.strip().count("\n") == 0 and "bad.onnx" in result.output
        assert "Traceback" not in result.output


def test_residual_models_have_erasable_branches_that_certify():
    expected = {"resnet.onnx": 5, "mobilenetv2.onnx": 2, "convnext.onnx": 3, "transformer.onnx": 4,
                "transformer_dynamo.onnx": 4}
    for name, count in expected.items():
        analysis = groups.analyze(graph.load(os.path.join(MODELS, name)))
        assert len(analysis.erasable) == count, name
        cert = verify.certify(analysis, subsets=1)
        assert cert.units_verified == count and cert.passed, name


def test_a_branch_with_a_bias_after_a_non_zero_preserving_op_is_not_erasable():
    # SE's gate (Sigmoid) sits inside the residual branch of se.onnx, but the branch's last op
    # is a Mul by the features, so zero weights still give a zero branch: it is erasable.
    analysis = groups.analyze(graph.load(os.path.join(MODELS, "se.onnx")))
    assert [u.join for u in analysis.erasable]
    # the SE gate itself multiplies the features: it is not a branch of a join
    assert all(u.kind == "add" for u in analysis.erasable)


def test_concat_models_have_erasable_branches_that_certify():
    expected = {"unet.onnx": 2, "unet_dynamo.onnx": 2, "densenet.onnx": 6, "densenet_dynamo.onnx": 6, "c2f.onnx": 1}
    for name, count in expected.items():
        analysis = groups.analyze(graph.load(os.path.join(MODELS, name)))
        concat = [u for u in analysis.erasable if u.kind == "concat"]
        assert len(concat) == count, name
        cert = verify.certify(analysis, subsets=1)
        assert cert.units_verified == len(analysis.erasable) and cert.passed, name


def test_erasing_a_unit_saves_exactly_its_predicted_params_and_flops():
    for name in ("unet.onnx", "densenet_dynamo.onnx", "c2f.onnx", "resnet_bn.onnx", "transformer.onnx",
                 "mobilenetv2.onnx", "convnext.onnx"):
        analysis = groups.analyze(graph.load(os.path.join(MODELS, name)))
        for unit in analysis.erasable:
            erased = cut_model(analysis.model, analysis.groups, groups.keep_all(analysis.groups), [unit])
            counted = groups.model_cost(graph.Model.from_proto(erased, name))
            assert counted == (analysis.params - unit.param_count, analysis.flops - unit.flops), (name, unit.id)


def test_densenet_branch_owns_the_batchnorms_after_its_concat():
    # pre-activation: BN(0) = beta - gamma * mean / std, so the segment is zero only with the
    # BatchNorms' slices zeroed too; without them the certificate must fail
    analysis = groups.analyze(graph.load(os.path.join(MODELS, "densenet.onnx")))
    model, unit = analysis.model, analysis.erasable[0]
    assert unit.zero_slices and all(s.index.size == 8 for s in unit.zero_slices)  # growth rate 8
    feeds = verify.random_inputs(model, np.random.default_rng(0))
    assert check_unit(model, analysis.groups, unit, feeds).passed
    unit.zero_slices = []
    check = check_unit(model, analysis.groups, unit, feeds)
    assert not check.passed and check.rel_diff > verify.TOLERANCE


def test_unet_erases_its_whole_lower_half():
    analysis = groups.analyze(graph.load(os.path.join(MODELS, "unet.onnx")))
    outer = max(analysis.erasable, key=lambda u: u.flops)
    inner = min(analysis.erasable, key=lambda u: u.flops)
    assert set(inner.nodes) < set(outer.nodes)  # the outer branch holds the inner level
    model = analysis.model
    feeds = verify.random_inputs(model, np.random.default_rng(1))
    both = [outer, inner]
    cut = cut_model(model, analysis.groups, groups.keep_all(analysis.groups), both)
    ops = [n.op_type for n in cut.graph.node]
    assert "ConvTranspose" not in ops and "MaxPool" not in ops and "Concat" not in ops, ops
    zeroed = graph.run(zero_units(model.proto, both), feeds)
    assert verify.relative_difference(zeroed, graph.run(cut, feeds)) <= verify.TOLERANCE
    assert outer.flops > 0.6 * analysis.flops  # its own nodes and the decoder's skip columns


def _saturated_sigmoid_net():
    """conv-relu (8 prunable channels) -> conv to 4 -> + (-16) -> Sigmoid: outputs around 1e-7."""
    net = Net(seed=3)
    x = net.input("x", ("N", 3, 8, 8))
    h = net.op("Relu", [net.conv(x, 3, 8, name="body")])
    z = net.op("Add", [net.conv(h, 8, 4, name="head"), net.const("shift", np.full((1, 4, 1, 1), -16, np.float32))])
    return graph.from_proto(net.model(net.op("Sigmoid", [z], name="y"), opset=17), "saturated")


def test_a_saturated_sigmoid_is_compared_on_its_range_and_its_argument_on_its_own_scale():
    model = _saturated_sigmoid_net()
    extra, floors = compared_tensors(model)
    assert extra == ["add_1"] and floors == [1.0, 0.0]  # the output on [0, 1]; what it reads, strictly
    assert verify.certify(groups.analyze(model), subsets=3).passed
    # a broken analysis is still caught: the pre-activation differs at the usual relative scale
    assert not verify.certify(_without_bias_slices(groups.analyze(model)), subsets=3).passed


def _large_logit_sigmoid_net():
    """conv-relu -> conv to 2, scaled by 200 -> Sigmoid: logits of scale ~100, as PP-OCRv3's DB head."""
    net = Net(seed=4)
    x = net.input("x", ("N", 3, 8, 8))
    h = net.op("Relu", [net.conv(x, 3, 8, name="body")])
    z = net.op("Mul", [net.conv(h, 8, 2, name="head"), net.const("gain", np.float32(200))])
    return graph.from_proto(net.model(net.op("Sigmoid", [z], name="y"), opset=17), "large_logits")


def test_a_bounded_value_is_compared_on_its_arguments_scale_when_that_is_larger():
    """float32 noise within the logits' tolerance moves a sigmoid by up to its slope (1/4) times as much: on
    logits of scale 100 that is more than 1e-4 of the value's range, with nothing cut wrongly. The value is then
    compared on its argument's scale; a wrong argument still fails on its own."""
    model = _large_logit_sigmoid_net()
    names, floors = verify.outputs_and_arguments(model)
    assert names == ["y", "mul_1"] and floors == [1.0, 0.0]
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    y, z = graph.run(graph.with_outputs(model.proto, ["mul_1"]), {"x": x})
    scale = float(np.abs(z).max())
    assert scale > 20
    scales = verify.argument_floors(model, names, [y, z], floors)
    assert scales == [scale, 0.0]
    sigmoid = lambda t: 1 / (1 + np.exp(-t.astype(np.float64)))  # noqa: E731
    for rel, passes in ((5e-5, True), (5e-4, False)):  # noise within the tolerance of z; a wrong z
        noise = rel * scale * np.sign(np.random.default_rng(1).standard_normal(z.shape))
        noisy = [sigmoid(z + noise), z + noise]
        value_alone = verify.relative_difference([y], noisy[:1], floors[:1])
        both = verify.relative_difference([y, z], noisy, scales)
        assert (both <= verify.TOLERANCE) == passes, (rel, both)
        if passes:
            assert value_alone > verify.TOLERANCE  # the old scale (1) would have failed this honest noise
    assert verify.certify(groups.analyze(model), subsets=3).passed


def test_an_erased_branch_whose_join_feeds_the_output_node_certifies():
    """The join Add of a residual branch feeds the head that makes the output, so it is compared (DESIGN.md
    §5's penultimate tensors); erasing the branch removes the Add: the cut model is read at the input that
    passes through in its place (the check failed on a tensor the cut no longer has)."""
    from onnx import TensorProto, helper
    rng = np.random.default_rng(0)
    weights = {name: (rng.standard_normal(shape) * 0.3).astype(np.float32)
               for name, shape in (("w0", (8, 3, 3, 3)), ("w1", (8, 8, 3, 3)), ("w2", (8, 8, 1, 1)), ("w3", (4, 8, 1, 1)))}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1] * 4),
             helper.make_node("Conv", ["a", "w1"], ["b1"], pads=[1] * 4), helper.make_node("Relu", ["b1"], ["b2"]),
             helper.make_node("Conv", ["b2", "w2"], ["b"]), helper.make_node("Add", ["a", "b"], ["c"]),
             helper.make_node("Conv", ["c", "w3"], ["y"])]
    g = helper.make_graph(nodes, "join_before_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = graph.from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    analysis = groups.analyze(model)
    assert len(analysis.erasable) == 1 and "c" in compared_tensors(model)[0]
    cert = verify.certify(analysis, subsets=1)
    assert cert.units_verified == 1 and cert.passed, cert
