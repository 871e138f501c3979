"""The shape of one operator's specification, and the node-reading primitives the facets share."""
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from onnx import helper

ALL = "all"  # non_differentiable: no input carries a gradient
MUL, ADD = "mul", "add"  # zero-source roles: one MUL source zero makes the output zero; every ADD source must be


@dataclass(frozen=True)
class OpSpec:
    """Everything onnxoto knows about one op type; a facet left at its default is the common case.

    couple(ctx): how the op couples input and output axes and where zeros come from (a
        groups.context.NodeContext); None makes the op a barrier ("no rule for <op>").
    zero(node, z, const): whether the output is all zero given z(tensor) (that input is all zero) and
        const(tensor) (an initializer's values, or None); None: never known to be zero.
    rewrite(node, new, old, edit): after a cut, the constants that carry sizes along cut axes
        (surgery's ConstantEditor `edit`; `new`/`old` shapes).
    non_differentiable: input indices that are shapes, indices, bounds or statistics; ALL; or a
        function of the node returning either (Cast: by its target type).
    bounded: the output lies in a fixed range, so it is compared on an absolute scale.
    flops(node, shape): multiply-accumulates; None: one operation per float output element.
    pass_through: the output is the input (inference): normalization bypasses the node.
    shape_only: the output depends on the input's shape alone: folded as a constant.
    no_gradient: why onnxruntime-training (CPU 1.19.2) needs another form of it in the training
        graph; train.forms holds that form.
    special: a stage that switches on this op type itself, and why.
    constant: whether a zeroed channel made a per-channel constant stays one through the op, and its
        value there (ops.constant.KeepsConstant); None: it does not.
    fold: how a consumer takes a constant input channel into its bias (ops.fold.Folds); None: it cannot.
    """

    couple: Callable | None = None
    zero: Callable | None = None
    rewrite: Callable | None = None
    non_differentiable: frozenset | str | Callable = frozenset()
    bounded: bool = False
    flops: Callable | None = None
    pass_through: bool = False
    shape_only: bool = False
    no_gradient: str = ""
    special: str = ""
    constant: object = None
    fold: object = None

    def but(self, **changes):
        """This spec with some facets changed (the table's entries share their common parts)."""
        if "non_differentiable" in changes and isinstance(changes["non_differentiable"], (set, list, tuple)):
            changes["non_differentiable"] = frozenset(changes["non_differentiable"])
        return replace(self, **changes)

    def non_differentiable_inputs(self, node):
        """The input indices of `node` that carry no gradient, or ALL."""
        excluded = self.non_differentiable
        return excluded(node) if callable(excluded) else excluded


def attribute(node, name, default=None):
    """A node attribute's value, decoded (strings as str, not bytes)."""
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def operand(node, i):
    """Input i of `node`, or None when it is absent or empty (an optional input left out)."""
    return node.input[i] if i < len(node.input) and node.input[i] else None


def scalar(value):
    """A constant of one element as a float, else None (a per-channel tensor, or computed at run time)."""
    if value is None or np.size(value) != 1:
        return None
    return float(np.ravel(value)[0])
