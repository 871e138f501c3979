"""Folding a constant input channel into the consumer's bias (OpSpec.fold).

A consumer whose every output position sums the channel over the same number of positions (a Conv
that reads no padding, Gemm, MatMul over the reduced axis) adds the same amount, sum of its weights
over that channel times the constant, at every position: that amount joins its bias and the channel
can go. `declines(node, k, const)`: why a constant on input k cannot be folded, or "".
`delta(node, k, values, const)`: what joins the bias, values the constant per input channel (zero
elsewhere); `bias`: the input index of the bias (None: an Add after the node); `out_axis`: the
output axis the delta runs along.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .spec import attribute, operand


@dataclass(frozen=True)
class Folds:
    declines: Callable
    delta: Callable
    bias: int | None
    out_axis: int


def _label(node):
    return f"{node.op_type} '{node.name or node.output[0]}'"


def _conv_declines(node, k, const):
    if k != 0 or const(operand(node, 1)) is None:
        return f"{_label(node)} reads them with a weight computed at run time"
    if attribute(node, "group", 1) != 1:
        return f"{_label(node)} is grouped"
    padded = any(attribute(node, "pads", None) or ()) or attribute(node, "auto_pad", "NOTSET").startswith("SAME")
    if padded:
        return f"{_label(node)} reads them with padding (a constant folds into a bias only where none is read)"
    return ""


def _conv_delta(node, k, values, const):
    w = const(node.input[1]).astype(np.float64)
    return w.sum(axis=tuple(range(2, w.ndim))) @ values  # (M,)


def _gemm_declines(node, k, const):
    if k != 0:
        return f"{_label(node)} reads them as its second operand"
    if const(operand(node, 1)) is None or (operand(node, 2) and const(operand(node, 2)) is None):
        return f"{_label(node)} reads them with a weight or bias computed at run time"
    if attribute(node, "beta", 1.0) == 0.0 or attribute(node, "transA", 0):
        return f"{_label(node)} has beta = 0 or a transposed first operand"
    return ""


def _gemm_delta(node, k, values, const):
    b = const(node.input[1]).astype(np.float64)
    b = b.T if attribute(node, "transB", 0) else b  # (K, N)
    return attribute(node, "alpha", 1.0) * (values @ b) / attribute(node, "beta", 1.0)


def _matmul_declines(node, k, const):
    w = const(operand(node, 1))
    if k != 0 or w is None or w.ndim != 2:
        return f"{_label(node)} reads them without a 2-D weight as its second operand"
    return ""


def _matmul_delta(node, k, values, const):
    return values @ const(node.input[1]).astype(np.float64)  # (N,)


CONV = Folds(_conv_declines, _conv_delta, bias=2, out_axis=1)
GEMM = Folds(_gemm_declines, _gemm_delta, bias=2, out_axis=-1)
MATMUL = Folds(_matmul_declines, _matmul_delta, bias=None, out_axis=-1)
