"""One specification per ONNX op type (default domain): every stage reads its facet here.

Adding an operator is adding its entry (and a rule test in tests/test_rules.py). An op type with no
entry, or an entry without `couple`, is a barrier to pruning ("no rule for <op>").
"""
from onnx import TensorProto

from . import constant, coupling as c, flops, fold, rewrite, zero
from .spec import ALL, OpSpec, attribute

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}


def _cast_inputs(node):
    """A Cast to a non-float type ends every gradient."""
    return frozenset() if attribute(node, "to") in FLOAT_TYPES else ALL


# the common kinds of op; the table's entries are these, with their own facets added (`but`)
# f(0) = 0 elementwise
KEEPS_ZERO = OpSpec(couple=c.zero_preserving, zero=zero.first, constant=constant.ELEMENTWISE)
# f(0) != 0: a zero channel is a constant after it
BREAKS_ZERO = OpSpec(couple=c.not_zero_preserving, constant=constant.ELEMENTWISE)
SUM_LIKE = OpSpec(couple=c.additive, zero=zero.every, constant=constant.ELEMENTWISE)
POOL = OpSpec(couple=c.pool, zero=zero.first, constant=constant.POOLED)
MOVES_DATA = OpSpec(zero=zero.first)  # the output is some of the input's values: zeros stay zeros
NO_GRADIENT_OUT = OpSpec(non_differentiable=ALL)  # comparisons, indices, random: outputs carry no gradient
SHAPE_ARITHMETIC = OpSpec(couple=c.no_coupling, non_differentiable=ALL)
AXES_INPUT = frozenset({1})
NO_GRADIENT = "no gradient registered"

SPECS = {
    # --- elementwise, zero-preserving ---
    # its gradient trains, slowly: ReluGrad took 13-19% of a ResNet step, ~10x the Mul of the training form
    "Relu": KEEPS_ZERO.but(no_gradient="ReluGrad is far slower than the Mul of x * (x > 0)"),
    "LeakyRelu": KEEPS_ZERO,
    "Elu": KEEPS_ZERO,
    "Selu": KEEPS_ZERO,
    "Celu": KEEPS_ZERO,
    "Tanh": KEEPS_ZERO.but(bounded=True),
    "Erf": KEEPS_ZERO,
    "Gelu": KEEPS_ZERO,
    "HardSwish": KEEPS_ZERO.but(no_gradient=NO_GRADIENT),
    "Mish": KEEPS_ZERO,
    "Abs": KEEPS_ZERO,
    "Neg": KEEPS_ZERO,
    "Sign": KEEPS_ZERO.but(non_differentiable=ALL),
    "Sin": KEEPS_ZERO,
    "Floor": KEEPS_ZERO.but(non_differentiable=ALL),
    "Ceil": KEEPS_ZERO.but(non_differentiable=ALL),
    "Round": KEEPS_ZERO.but(non_differentiable=ALL),
    "Sqrt": KEEPS_ZERO,
    "Softsign": KEEPS_ZERO,
    "ThresholdedRelu": KEEPS_ZERO,
    "Atan": KEEPS_ZERO,
    "Asin": KEEPS_ZERO,
    "Sinh": KEEPS_ZERO,
    "Tan": KEEPS_ZERO,
    "Asinh": KEEPS_ZERO,
    "Atanh": KEEPS_ZERO,
    "Identity": KEEPS_ZERO.but(pass_through=True),
    "Dropout": KEEPS_ZERO.but(pass_through=True, non_differentiable={1, 2},
                              special="graph.normalize keeps a Dropout whose mask output is read"),
    "Cast": KEEPS_ZERO.but(non_differentiable=_cast_inputs),
    "PRelu": OpSpec(couple=c.prelu, zero=zero.first, constant=constant.ELEMENTWISE, no_gradient=NO_GRADIENT),
    # --- elementwise, zero-preserving on a condition (ops.conditions) ---
    "Clip": OpSpec(couple=c.clip, zero=zero.clip, non_differentiable={1, 2},
                   constant=constant.ELEMENTWISE),
    "Pow": OpSpec(couple=c.power, zero=zero.power, non_differentiable={1}, constant=constant.ELEMENTWISE),
    "Max": OpSpec(couple=c.extremum, zero=zero.extremum, constant=constant.ELEMENTWISE),
    "Min": OpSpec(couple=c.extremum, zero=zero.extremum, constant=constant.ELEMENTWISE),
    # --- elementwise, not zero-preserving ---
    "Sigmoid": BREAKS_ZERO.but(bounded=True),
    "HardSigmoid": BREAKS_ZERO.but(bounded=True, no_gradient=NO_GRADIENT),
    "Exp": BREAKS_ZERO,
    "Softplus": BREAKS_ZERO,
    "Cos": BREAKS_ZERO,
    "Log": BREAKS_ZERO,
    "Reciprocal": BREAKS_ZERO,
    "Cosh": BREAKS_ZERO,
    "Acos": BREAKS_ZERO,
    "Acosh": BREAKS_ZERO,
    "Not": BREAKS_ZERO.but(non_differentiable=ALL),
    # --- elementwise, several operands ---
    "Add": SUM_LIKE.but(special="groups.erase: an Add joining two branches can bypass one"),
    "Sub": SUM_LIKE,
    "Sum": SUM_LIKE.but(no_gradient=NO_GRADIENT),
    "Mean": SUM_LIKE.but(no_gradient=NO_GRADIENT),
    "Mul": OpSpec(couple=c.multiplicative, zero=zero.any_operand, constant=constant.ELEMENTWISE),
    "Div": OpSpec(couple=c.divide, zero=zero.first, constant=constant.ELEMENTWISE),
    "Where": OpSpec(couple=c.where, zero=zero.branches, non_differentiable={0},
                    constant=constant.ELEMENTWISE),
    # --- linear layers ---
    "Conv": OpSpec(couple=c.conv, zero=zero.affine([0, 1], [2]), rewrite=rewrite.conv_group(weight_axis=1),
                   flops=flops.conv, fold=fold.CONV),
    "ConvTranspose": OpSpec(couple=c.conv_transpose, zero=zero.affine([0, 1], [2]),
                            rewrite=rewrite.conv_group(weight_axis=0), flops=flops.conv_transpose,
                            no_gradient="no CPU kernel for ConvTransposeGrad"),
    "Gemm": OpSpec(couple=c.gemm, zero=zero.affine([0, 1], [2]), flops=flops.gemm, fold=fold.GEMM),
    "MatMul": OpSpec(couple=c.matmul, zero=zero.any_operand, flops=flops.matmul, fold=fold.MATMUL),
    "Gather": OpSpec(couple=c.gather, zero=zero.first, non_differentiable={1},
                     special="verify.inputs draws integer inputs below the row count of the table they index"),
    # --- normalization ---
    "BatchNormalization": OpSpec(couple=c.batch_norm, zero=zero.affine([1], [2]), non_differentiable={3, 4},
                                 special="train: batch statistics or a frozen affine form, recalibrated after"),
    "InstanceNormalization": OpSpec(couple=c.instance_norm, zero=zero.affine([1], [2])),
    "LayerNormalization": OpSpec(couple=c.layer_norm, zero=zero.affine([1], [2]),
                                 special="train.trainable adds its optional outputs, which the gradient builder reads"),
    # onnxruntime's fused RMSNorm (default domain, no ONNX schema: its shapes come from the file's value_info)
    "SimplifiedLayerNormalization": OpSpec(couple=c.layer_norm, zero=zero.affine([0, 1], [])),
    "GroupNormalization": OpSpec(couple=c.group_norm, zero=zero.affine([1], [2])),
    "LRN": OpSpec(couple=c.group_norm, zero=zero.first, no_gradient=NO_GRADIENT),
    "Softmax": OpSpec(couple=c.softmax, bounded=True),
    "LogSoftmax": OpSpec(couple=c.softmax),
    # --- pooling and reductions ---
    "MaxPool": POOL,
    "AveragePool": POOL.but(no_gradient="AveragePoolGrad dies of SIGFPE (DenseNet)"),
    "GlobalAveragePool": POOL,
    "GlobalMaxPool": POOL.but(no_gradient=NO_GRADIENT),
    "LpPool": POOL.but(constant=None),  # (sum |c|^p)^(1/p) grows with the window
    "GlobalLpPool": POOL.but(constant=None),
    "ReduceSum": OpSpec(couple=c.reduce_rule(sum_like=True), zero=zero.first, non_differentiable=AXES_INPUT),
    "ReduceL1": OpSpec(couple=c.reduce_rule(sum_like=True), zero=zero.first, non_differentiable=AXES_INPUT),
    "ReduceL2": OpSpec(couple=c.reduce_rule(sum_like=True), zero=zero.first, non_differentiable=AXES_INPUT),
    "ReduceSumSquare": OpSpec(couple=c.reduce_rule(sum_like=True), zero=zero.first,
                              non_differentiable=AXES_INPUT),
    "ReduceMean": OpSpec(couple=c.reduce_rule(sum_like=False), zero=zero.first, non_differentiable=AXES_INPUT,
                        constant=constant.AVERAGED),
    "ReduceMax": OpSpec(couple=c.reduce_rule(sum_like=False), zero=zero.first, non_differentiable=AXES_INPUT,
                        constant=constant.AVERAGED, no_gradient=NO_GRADIENT),
    "ReduceMin": OpSpec(couple=c.reduce_rule(sum_like=False), zero=zero.first, non_differentiable=AXES_INPUT,
                        constant=constant.AVERAGED),
    "ReduceProd": OpSpec(couple=c.reduce_rule(sum_like=False), zero=zero.first, non_differentiable=AXES_INPUT),
    # log-sum-exp of zeros is log n, log-sum of zeros is -inf: not zero
    "ReduceLogSumExp": OpSpec(couple=c.reduce_rule(sum_like=False, keeps_zero=False),
                              non_differentiable=AXES_INPUT),
    "ReduceLogSum": OpSpec(couple=c.reduce_rule(sum_like=False, keeps_zero=False), non_differentiable=AXES_INPUT),
    # --- data movement ---
    "Transpose": MOVES_DATA.but(couple=c.transpose),
    "Concat": MOVES_DATA.but(couple=c.concat, zero=zero.every, constant=constant.JOINED,
                             special="groups.erase and surgery: a Concat joining branches can lose a segment"),
    "Split": MOVES_DATA.but(couple=c.split, rewrite=rewrite.split_sizes, non_differentiable={1}),
    "Slice": MOVES_DATA.but(couple=c.slice_rule, rewrite=rewrite.slice_bounds, non_differentiable={1, 2, 3, 4},
                            no_gradient="negative steps fail at run time"),
    "Pad": OpSpec(couple=c.pad, zero=zero.pad, rewrite=rewrite.pad_pads, non_differentiable={1, 2, 3},
                  no_gradient="only mode=constant trains"),
    "Reshape": MOVES_DATA.but(couple=c.reshape, constant=constant.UNIT_AXES, rewrite=rewrite.reshape_target,
                              non_differentiable={1},
                              special="graph.normalize names the size inference left symbolic (a -1)"),
    "Flatten": MOVES_DATA.but(couple=c.squeeze_like, constant=constant.UNIT_AXES),
    "Squeeze": MOVES_DATA.but(couple=c.squeeze_like, constant=constant.UNIT_AXES, non_differentiable={1}),
    "Unsqueeze": MOVES_DATA.but(couple=c.squeeze_like, constant=constant.UNIT_AXES, non_differentiable={1}),
    "Resize": MOVES_DATA.but(couple=c.keep_channels, rewrite=rewrite.resize_sizes, non_differentiable={1, 2, 3},
                             no_gradient="no CPU kernel for ResizeGrad"),
    "Upsample": MOVES_DATA.but(couple=c.keep_channels, non_differentiable={1}),
    "Expand": MOVES_DATA.but(couple=c.keep_channels, rewrite=rewrite.expand_shape, non_differentiable={1}),
    "Tile": MOVES_DATA.but(couple=c.keep_channels, non_differentiable={1}),
    "DepthToSpace": OpSpec(no_gradient=NO_GRADIENT),
    "SpaceToDepth": OpSpec(no_gradient=NO_GRADIENT),
    # --- recurrent: barriers, trained forward (sequence_lens is an integer input) ---
    "LSTM": OpSpec(non_differentiable={4}, no_gradient="LSTMGrad takes only the forward direction"),
    "GRU": OpSpec(non_differentiable={4}, no_gradient="GRUGrad takes only the forward direction"),
    # --- shapes and integers ---
    "Shape": SHAPE_ARITHMETIC.but(shape_only=True),
    "Size": SHAPE_ARITHMETIC.but(shape_only=True),
    "ConstantOfShape": SHAPE_ARITHMETIC,
    "Range": SHAPE_ARITHMETIC,
    "NonZero": SHAPE_ARITHMETIC,
    "Constant": OpSpec(couple=c.no_coupling, special="graph.normalize turns it into an initializer"),
    # --- no coupling rule (barriers), known for gradients ---
    "GatherElements": OpSpec(non_differentiable={1}),
    "GatherND": OpSpec(non_differentiable={1}),
    "ScatterElements": OpSpec(non_differentiable={1}),
    "ScatterND": OpSpec(non_differentiable={1}),
    "TopK": OpSpec(non_differentiable={1}),
    "CumSum": OpSpec(non_differentiable={1}),
    "Trilu": OpSpec(non_differentiable={1}),
    **dict.fromkeys(["OneHot", "ArgMax", "ArgMin", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual",
                     "And", "Or", "Xor", "IsNaN", "IsInf", "EyeLike", "RandomNormalLike", "RandomUniformLike",
                     "Bernoulli"], NO_GRADIENT_OUT),
}


def spec_of(node):
    """The OpSpec of a node, or None for an op of another domain or one onnxoto knows nothing of."""
    if node.domain not in ("", "ai.onnx"):
        return None
    return SPECS.get(node.op_type)


def no_gradient_inputs(node):
    """The input indices of `node` that are shapes, indices, bounds or statistics (no gradient), or ALL."""
    spec = spec_of(node)
    return frozenset() if spec is None else spec.non_differentiable_inputs(node)


def is_value_input(node, k):
    """Whether input k of `node` is a value (a weight, an activation), not a shape, index, bound or statistic."""
    excluded = no_gradient_inputs(node)
    return excluded != ALL and k not in excluded
