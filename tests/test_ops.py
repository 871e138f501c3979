"""The operator table (onnxoto.ops): one spec per op type, its facets agreeing with each other, every
coupling rule exercised by a rule test, and erasure reading the same zero conditions as the rules."""
import ast
import os

import numpy as np
import pytest
from onnx import numpy_helper

from edge_helpers import Net, analyze_proto, between_convs
from onnxoto import verify
from onnxoto.ops import SPECS, spec_of
from onnxoto.train.forms import REWRITES

TESTS = os.path.dirname(os.path.abspath(__file__))


def _strings_in(path):
    tree = ast.parse(open(path).read())
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_every_op_with_a_coupling_rule_is_named_by_a_rule_test():
    named = _strings_in(os.path.join(TESTS, "test_rules.py"))
    missing = sorted(op for op, spec in SPECS.items() if spec.couple is not None and op not in named)
    assert not missing, f"no rule test builds a graph with {missing}"


def test_the_training_forms_are_the_ops_the_table_says_cannot_train():
    assert set(REWRITES) == {op for op, spec in SPECS.items() if spec.no_gradient}


def residual(branch_end):
    """x -> conv 'stem' -> h; h -> conv 'b1' -> branch_end(net, t) -> Add(h, .) -> Relu -> conv 'post' -> y."""
    n = Net()
    h = n.conv(n.input(shape=("N", 3, 8, 8)), 3, 8, name="stem")
    t = branch_end(n, n.conv(h, 8, 8, name="b1"))
    joined = n.op("Relu", [n.op("Add", [h, t], name="join")])
    n.op("Conv", [joined, n.weight("post.weight", (4, 8, 1, 1))], outputs=["y"], name="post", kernel_shape=[1, 1])
    return n.model("y")


def _clip(low, high):
    return lambda n, t: n.op("Clip", [t, n.const(f"low{low}", np.float32(low)), n.const(f"high{high}", np.float32(high))])


def _pad(fill):
    return lambda n, t: n.op("Slice", [n.op("Pad", [t, n.ints("pads", [0, 0, 1, 1, 0, 0, 1, 1]),
                                                    n.const("fill", np.float32(fill))]),
                                       n.ints("starts", [1, 1]), n.ints("ends", [9, 9]), n.ints("axes", [2, 3])])


def _max(c):
    return lambda n, t: n.op("Max", [t, n.const("c", np.float32(c))])


def _min(c):
    return lambda n, t: n.op("Min", [t, n.const("c", np.float32(c))])


ZERO_KEEPING = [("Clip(0, 6)", _clip(0.0, 6.0)), ("Pad(value=0)", _pad(0.0)), ("Max(x, 0)", _max(0.0)),
                ("Max(x, -1)", _max(-1.0)), ("Min(x, 6)", _min(6.0)), ("Min(x, 0)", _min(0.0))]
ZERO_BREAKING = [("Clip(0.5, 6)", _clip(0.5, 6.0)), ("Clip(-2, -1)", _clip(-2.0, -1.0)), ("Pad(value=1)", _pad(1.0)),
                 ("Max(x, 0.5)", _max(0.5)), ("Min(x, -1)", _min(-1.0))]


def branch_units(proto):
    analysis = analyze_proto(proto)
    return analysis, [u for u in analysis.erasable if "b1" in u.nodes]


@pytest.mark.parametrize("label, end", ZERO_KEEPING, ids=[k for k, _ in ZERO_KEEPING])
def test_a_branch_ending_in_a_zero_keeping_op_is_erasable_and_certified(label, end):
    analysis, units = branch_units(residual(end))
    assert len(units) == 1, label
    cert = verify.certify(analysis, subsets=1, seed=0)
    assert cert.passed and cert.units_verified == cert.units_total >= 1, label


@pytest.mark.parametrize("label, end", ZERO_BREAKING, ids=[k for k, _ in ZERO_BREAKING])
def test_a_branch_ending_in_an_op_that_makes_zeros_non_zero_is_not_erasable(label, end):
    """Erasure reads the same condition as the coupling rules: zeroed weights give clip(0) = 0.5 or a
    border of ones here, so removing the branch would change the Add's output."""
    _, units = branch_units(residual(end))
    assert not units, label


@pytest.mark.parametrize("label, end", ZERO_KEEPING + ZERO_BREAKING, ids=[k for k, _ in ZERO_KEEPING + ZERO_BREAKING])
def test_coupling_and_zero_propagation_agree(label, end):
    """The channel groups (coupling) and the zero facet say the same of each conditional op."""
    proto = between_convs(lambda n, h: end(n, h))
    analysis = analyze_proto(proto)
    pre = next(g for g in analysis.groups if any(s.name == "pre.weight" and s.axis == 0 for s in g.slices))
    model = analysis.model
    const = lambda t: numpy_helper.to_array(model.initializers[t]) if t in model.initializers else None  # noqa: E731
    node = next(n for n in model.graph.node if n.op_type in ("Clip", "Pad", "Max", "Min"))
    says_zero = spec_of(node).zero(node, lambda t: t == node.input[0], const)
    assert (pre.prunable and not pre.folds) == says_zero, (label, pre.reason)  # a fold: the channel is not zero
