"""What each ONNX operator means to onnxoto: one OpSpec per op type (ops.table.SPECS), read by every stage.

Facets: coupling rule, zero propagation and its conditions, shape-carrying operands and their rewrite
after a cut, inputs without gradient, bounded outputs, FLOPs, pass-through, training forms needed.
Imports nothing of onnxoto but errors: graph, groups, surgery, verify and train all read it.
"""
from .coupling import match_reshape
from .flops import numel
from .shapes import resolve_fresh_symbol
from .spec import ADD, ALL, MUL, OpSpec, attribute, operand
from .table import FLOAT_TYPES, SPECS, is_value_input, no_gradient_inputs, spec_of

__all__ = ["ADD", "ALL", "FLOAT_TYPES", "MUL", "OpSpec", "SPECS", "attribute", "is_value_input", "match_reshape",
           "no_gradient_inputs", "numel", "operand", "resolve_fresh_symbol", "spec_of"]
