"""A shortcut widened by a zero Pad on the channel axis (tflite2onnx's BlazeFace blocks): the input's
channels stay prunable as a segment of the output, the padded positions are zeros that the Conv's extra
channels are added to, and a cut of those shrinks the pads. Certified: zeroed group == cut model."""
import numpy as np
import pytest
from onnx import numpy_helper

from blaze_models import blaze_net
from onnxoto import graph, groups, verify
from onnxoto.surgery import cut, zero_out

# stem's 8 channels run through every residual Add; each widening Pad meets a pointwise conv's extra ones
EXPECTED = {"stem.weight:0": 8, "b2.pw.weight:0": 4, "b3.pw.weight:0": 4, "b5.pw.weight:0": 4}


def _pads(proto):
    """The pads of every Pad node, by the tensor it pads (input or attribute)."""
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    out = {}
    for node in proto.graph.node:
        if node.op_type == "Pad":
            attr = [list(a.ints) for a in node.attribute if a.name == "pads"]
            out[node.input[0]] = attr[0] if attr else inits[node.input[1]].tolist()
    return out


OPSETS = [18, 11, 10]  # pads and axes as inputs; pads as an input; pads as an attribute


@pytest.mark.parametrize("opset", OPSETS)
def test_blaze_blocks_with_channel_pads_are_prunable_and_certify(opset):
    analysis = groups.analyze(graph.from_proto(blaze_net(opset), "blaze"))
    assert {g.id: g.num_zigs for g in analysis.prunable} == EXPECTED
    cert = verify.certify(analysis, subsets=3)
    assert cert.passed, cert.failures
    assert cert.groups_verified == len(EXPECTED)


@pytest.mark.parametrize("opset", OPSETS)
def test_cutting_padded_positions_shrinks_the_pads_and_matches_the_zeroed_model(opset):
    model = graph.from_proto(blaze_net(opset), "blaze")
    analysis = groups.analyze(model)
    keep = groups.keep_all(analysis.groups)
    for gid in EXPECTED:
        keep[gid][[0, 2]] = False
    small = cut(model, analysis.groups, keep)
    # b2 pads 8 -> 12 at the end, b3 12 -> 16 at the start, b5 16 -> 20 at the end: two of each four gone
    at_end, at_start = ((0, 2), (2, 0)) if opset >= 18 else ((0, 0, 0, 0, 0, 2, 0, 0), (0, 2, 0, 0, 0, 0, 0, 0))
    assert sorted(map(tuple, _pads(small).values())) == sorted([at_end, at_start, at_end])
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)}
    zeroed = graph.run(zero_out(model, analysis.groups, keep), feeds)
    assert verify.relative_difference(zeroed, graph.run(small, feeds)) <= verify.TOLERANCE
