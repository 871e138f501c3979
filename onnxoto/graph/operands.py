"""Which operands of an operator are values (weights, activations) and which are shapes, indices,
bounds or statistics: read by training (what to learn) and erasing (what a branch's weights are)."""

ALL = "all"
# Inputs that carry shapes, indices, bounds or statistics, not values to learn.
NON_DIFFERENTIABLE_INPUTS = {
    "Reshape": {1}, "Expand": {1}, "Tile": {1}, "Upsample": {1}, "Resize": {1, 2, 3},
    "Slice": {1, 2, 3, 4}, "Pad": {1, 2, 3}, "Split": {1}, "Squeeze": {1}, "Unsqueeze": {1},
    "BatchNormalization": {3, 4}, "Gather": {1}, "GatherElements": {1}, "GatherND": {1},
    "ScatterElements": {1}, "ScatterND": {1}, "TopK": {1}, "Clip": {1, 2}, "Dropout": {1, 2},
    "Where": {0}, "Pow": {1}, "CumSum": {1}, "Trilu": {1},
    "ReduceMean": {1}, "ReduceSum": {1}, "ReduceMax": {1}, "ReduceMin": {1}, "ReduceProd": {1},
    "ReduceL1": {1}, "ReduceL2": {1}, "ReduceLogSumExp": {1}, "ReduceSumSquare": {1},
    # Ops whose outputs carry no gradient at all.
    "Shape": ALL, "Size": ALL, "ConstantOfShape": ALL, "Range": ALL, "NonZero": ALL, "OneHot": ALL,
    "ArgMax": ALL, "ArgMin": ALL, "Equal": ALL, "Less": ALL, "LessOrEqual": ALL, "Greater": ALL,
    "GreaterOrEqual": ALL, "Not": ALL, "And": ALL, "Or": ALL, "Xor": ALL, "IsNaN": ALL, "IsInf": ALL,
    "Floor": ALL, "Ceil": ALL, "Round": ALL, "Sign": ALL, "EyeLike": ALL,
    "RandomNormalLike": ALL, "RandomUniformLike": ALL, "Bernoulli": ALL,
}


def is_value_input(op_type, k):
    """Whether input k of an `op_type` node is a value (not a shape, index, bound or statistic)."""
    excluded = NON_DIFFERENTIABLE_INPUTS.get(op_type, ())
    return excluded != ALL and k not in excluded


def node_reads(node):
    """The names `node` reads: its inputs and whatever its subgraphs (If/Loop/Scan bodies) read,
    which includes tensors of the outer graph they use without declaring them."""
    names = [i for i in node.input if i]
    for attribute in node.attribute:
        for body in [attribute.g, *attribute.graphs] if attribute.type in (5, 10) else []:  # GRAPH, GRAPHS
            for inner in body.node:
                names += node_reads(inner)
    return names
