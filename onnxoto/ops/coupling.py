"""Coupling rules (OpSpec.couple): how an op couples the axes of its inputs and outputs.

A rule receives a groups.context.NodeContext and states couplings (same/block/offset), zero
behaviour (sources, never_zero, zeros, contract), roles of parameter axes (consumer/follower) and pins.
An op whose spec has no rule is a barrier: every axis it touches is pinned ("no rule for <op>").
"""
from .conditions import UNKNOWN, clip_keeps_zero, extremum_neutral_inputs, pad_fill, pad_widths, pow_keeps_zero
from .shapes import resolve_fresh_symbol
from .spec import ADD, MUL, scalar

# --- elementwise ---------------------------------------------------------------------------


def zero_preserving(ctx):
    """f(0) = 0 elementwise: zero channels stay zero."""
    ctx.broadcast(MUL, inputs=[0])


def not_zero_preserving(ctx):
    """f(0) != 0 (sigmoid, exp): a zero channel becomes a constant, so it is not zero after this op."""
    ctx.broadcast(ADD, inputs=[0])
    for d in ctx.dims(ctx.output()):
        ctx.never_zero(d)


def additive(ctx):
    """Sum-like: the output channel is zero only when every operand's channel is."""
    ctx.broadcast(ADD)


def multiplicative(ctx):
    """Product-like: one zero operand makes the output channel zero."""
    ctx.broadcast(MUL)


def divide(ctx):
    """A / B: zero where A is; B (a divisor) travels with the channel but is never zeroed."""
    ctx.broadcast(MUL, inputs=[0])
    ctx.broadcast(None, inputs=[1])
    for axis in range(ctx.rank(ctx.input(1)) or 0):
        ctx.follower(ctx.input(1), axis)
        ctx.divides_by(ctx.d(ctx.input(1), axis))


def where(ctx):
    ctx.broadcast(None, inputs=[0])
    ctx.broadcast(ADD, inputs=[1, 2])


def clip(ctx):
    keeps = clip_keeps_zero(ctx.node, ctx.const)
    if keeps is UNKNOWN:
        return ctx.pin_all(f"{ctx.label}: bounds computed at run time")
    (zero_preserving if keeps else not_zero_preserving)(ctx)


def extremum(ctx):
    """Max/Min: sum-like (zero only when every operand is), except that a scalar constant which keeps
    zero (max(x, c <= 0), min(x, c >= 0)) is no operand that must be zero."""
    neutral = extremum_neutral_inputs(ctx.node, ctx.const)
    ctx.broadcast(ADD, inputs=[k for k in range(len(ctx.node.input)) if k not in neutral])


def prelu(ctx):
    ctx.broadcast(MUL, inputs=[0])
    ctx.broadcast(None, inputs=[1])
    for axis in range(ctx.rank(ctx.input(1)) or 0):
        ctx.follower(ctx.input(1), axis)  # slope of a zero input does not matter


def power(ctx):
    (zero_preserving if pow_keeps_zero(ctx.node, ctx.const) else not_zero_preserving)(ctx)


# --- linear layers -------------------------------------------------------------------------


def _pin_spatial(ctx, x, out):
    """A kernel slides over the spatial axes: positions there cannot be removed like channels."""
    for tensor in (x, out):
        for axis in range(2, ctx.rank(tensor) or 0):
            ctx.pin(tensor, axis, f"spatial axis of {ctx.label}")


def conv(ctx):
    """x (N, C, ...), W (M, C/g, k...), B (M): out (N, M, ...)."""
    x, w, b, out = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    _pin_spatial(ctx, x, out)
    group = ctx.attr("group", 1)
    ctx.same(ctx.d(w, 0), ctx.d(out, 1), MUL)
    if b:
        ctx.same(ctx.d(b, 0), ctx.d(out, 1), ADD)
    if group == 1:
        ctx.same(ctx.d(x, 1), ctx.d(w, 1))
        ctx.consumer(w, 1)
        ctx.contract(ctx.d(x, 1), ctx.d(w, 1))
    else:
        _conv_groups(ctx, x, out, group, in_per_group=ctx.shape(w)[1])
        ctx.source(ctx.d(out, 1), ctx.d(x, 1), MUL)


def conv_transpose(ctx):
    """x (N, C, ...), W (C, M/g, k...), B (M): out (N, M, ...)."""
    x, w, b, out = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    _pin_spatial(ctx, x, out)
    group = ctx.attr("group", 1)
    if b:
        ctx.same(ctx.d(b, 0), ctx.d(out, 1), ADD)
    if group == 1:
        ctx.same(ctx.d(w, 1), ctx.d(out, 1), MUL)
        ctx.same(ctx.d(x, 1), ctx.d(w, 0))
        ctx.consumer(w, 0)
        ctx.contract(ctx.d(x, 1), ctx.d(w, 0))
    else:
        ctx.same(ctx.d(x, 1), ctx.d(w, 0))
        _conv_groups(ctx, x, out, group, in_per_group=ctx.shape(x)[1] // group)
        ctx.source(ctx.d(out, 1), ctx.d(w, 0), MUL)
        ctx.source(ctx.d(out, 1), ctx.d(x, 1), MUL)


def _conv_groups(ctx, x, out, group, in_per_group):
    """Grouped/depthwise conv: a whole conv group (its input and output channels) is one ZIG."""
    virtual = ctx.space.dim(f"{ctx.node.output[0]}#groups", 0, group)
    out_per_group = ctx.shape(out)[1] // group
    ctx.block(virtual, ctx.d(x, 1), in_per_group) if in_per_group > 1 else ctx.same(virtual, ctx.d(x, 1))
    ctx.block(virtual, ctx.d(out, 1), out_per_group) if out_per_group > 1 else ctx.same(virtual, ctx.d(out, 1))


def gemm(ctx):
    """out (M, N) = alpha * A' B' + beta * C, with A' = A or A^T, B' = B or B^T."""
    a, b, c, out = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    a_m, a_k = (1, 0) if ctx.attr("transA", 0) else (0, 1)
    b_k, b_n = (1, 0) if ctx.attr("transB", 0) else (0, 1)
    _contract_pair(ctx, a, a_k, b, b_k)
    ctx.same(ctx.d(a, a_m), ctx.d(out, 0), MUL)
    ctx.same(ctx.d(b, b_n), ctx.d(out, 1), MUL)
    if c:
        ctx.broadcast(ADD, inputs=[2])


def matmul(ctx):
    """Numpy matmul: (..., M, K) @ (..., K, N); batch axes broadcast; 1-D operands have no M or N."""
    a, b, out = ctx.input(0), ctx.input(1), ctx.output()
    ra, rb, ro = ctx.rank(a), ctx.rank(b), ctx.rank(out)
    if None in (ra, rb, ro):
        return ctx.pin_all(f"{ctx.label}: shapes unknown")
    _contract_pair(ctx, a, ra - 1, b, max(rb - 2, 0))
    if ra >= 2:
        ctx.same(ctx.d(a, ra - 2), ctx.d(out, ro - 2 if rb >= 2 else ro - 1), MUL)
    if rb >= 2:
        ctx.same(ctx.d(b, rb - 1), ctx.d(out, ro - 1), MUL)
    batch = ro - (ra >= 2) - (rb >= 2)
    for axis in range(batch):
        for operand, rank in ((a, ra), (b, rb)):
            in_axis = axis - (batch - (rank - 2))
            if rank > 2 and in_axis >= 0:
                src, dst = ctx.d(operand, in_axis), ctx.d(out, axis)
                if src is not None and dst is not None and ctx.space.sizes[src] == ctx.space.sizes[dst]:
                    ctx.same(src, dst, MUL)


def _contract_pair(ctx, a, a_axis, b, b_axis):
    ctx.same(ctx.d(a, a_axis), ctx.d(b, b_axis))
    ctx.consumer(a, a_axis)
    ctx.consumer(b, b_axis)
    ctx.contract(ctx.d(a, a_axis), ctx.d(b, b_axis))


def gather(ctx):
    """Embedding lookup (data rows picked by indices) or picking along an activation axis."""
    data, indices, out = ctx.input(0), ctx.input(1), ctx.output()
    axis = ctx.attr("axis", 0)
    rd, ri = ctx.rank(data), ctx.rank(indices)
    if rd is None or ri is None:
        return ctx.pin_all(f"{ctx.label}: shapes unknown")
    axis %= rd
    ctx.pin(data, axis, f"{ctx.label} selects along this axis")
    for in_axis in range(rd):
        if in_axis != axis:
            out_axis = in_axis if in_axis < axis else in_axis + ri - 1
            ctx.same(ctx.d(data, in_axis), ctx.d(out, out_axis), MUL)
    for k in range(ri):
        ctx.pin(out, axis + k, f"{ctx.label}: axis comes from the indices")


# --- normalization ---------------------------------------------------------------------------


def batch_norm(ctx):
    """Inference-mode BatchNorm: y = scale * (x - mean) / sqrt(var + eps) + bias, per channel (axis 1)."""
    x, scale, bias, mean, var = (ctx.input(i) for i in range(5))
    y = ctx.d(ctx.output(), 1)
    ctx.same(ctx.d(x, 1), y)
    ctx.same(ctx.d(scale, 0), y, MUL)
    ctx.same(ctx.d(bias, 0), y, ADD)
    for stat in (mean, var):
        ctx.same(ctx.d(stat, 0), y)
        ctx.follower(stat, 0)


def instance_norm(ctx):
    """Per-sample, per-channel statistics: a zero channel stays zero before the affine part."""
    x, scale, bias = ctx.input(0), ctx.input(1), ctx.input(2)
    y = ctx.d(ctx.output(), 1)
    ctx.same(ctx.d(x, 1), y, MUL)
    ctx.same(ctx.d(scale, 0), y, MUL)
    ctx.same(ctx.d(bias, 0), y, ADD)


def layer_norm(ctx):
    """Normalizes over axes [axis, rank): zeros there change the statistics, so those axes are pinned."""
    x = ctx.input(0)
    rank = ctx.rank(x)
    if rank is None:
        return ctx.pin_all(f"{ctx.label}: shape unknown")
    axis = ctx.attr("axis", -1) % rank
    reason = f"normalized over by {ctx.label}"
    for a in range(axis, rank):
        ctx.pin(x, a, reason)
        ctx.same(ctx.d(x, a), ctx.d(ctx.output(), a))  # coupled, so the table shows one pinned group
        for k in (1, 2):
            if ctx.input(k):
                ctx.same(ctx.d(ctx.input(k), a - axis), ctx.d(ctx.output(), a))
    for a in range(axis):
        ctx.same(ctx.d(x, a), ctx.d(ctx.output(), a), MUL)


def group_norm(ctx):
    ctx.pin_all(f"channels normalized together by {ctx.label}")


def softmax(ctx):
    """Softmax over one axis: that axis is pinned; the others pass, but never as zero (softmax(0) = 1/n)."""
    x, out = ctx.input(0), ctx.output()
    rank = ctx.rank(x)
    if rank is None:
        return ctx.pin_all(f"{ctx.label}: shape unknown")
    axis = ctx.attr("axis", -1) % rank
    ctx.pin(x, axis, f"normalized over by {ctx.label}")
    ctx.same(ctx.d(x, axis), ctx.d(out, axis))
    for a in range(rank):
        if a != axis:
            ctx.same(ctx.d(x, a), ctx.d(out, a), ADD)
            ctx.never_zero(ctx.d(out, a))


# --- reductions and pooling ----------------------------------------------------------------


def pool(ctx):
    """Pooling keeps batch and channel axes; zeros pool to zero (max of zeros, mean of zeros)."""
    _pin_spatial(ctx, ctx.input(0), ctx.output())
    for a in (0, 1):
        ctx.same(ctx.d(ctx.input(0), a), ctx.d(ctx.output(), a), MUL)


def reduce_rule(sum_like, keeps_zero=True):
    """Reductions: kept axes pass; a reduced axis sums (exact when zero) or normalizes (pinned).
    keeps_zero=False: the reduction of zeros is not zero (log-sum-exp of zeros is log n)."""

    def rule(ctx):
        x, out = ctx.input(0), ctx.output()
        rank = ctx.rank(x)
        if rank is None:
            return ctx.pin_all(f"{ctx.label}: shape unknown")
        axes = ctx.axes_from(1)
        if axes is None and ctx.input(1):
            return ctx.pin_all(f"{ctx.label}: axes computed at run time")
        if not axes:
            axes = [] if ctx.attr("noop_with_empty_axes", 0) else list(range(rank))
        axes = sorted(a % rank for a in axes)
        keep = ctx.attr("keepdims", 1)
        out_axis = 0
        for a in range(rank):
            if a in axes:
                if sum_like:
                    ctx.contract(ctx.d(x, a))
                else:
                    ctx.pin(x, a, _reduced_reason(ctx, x))
                out_axis += keep
                continue
            ctx.same(ctx.d(x, a), ctx.d(out, out_axis), MUL if keeps_zero else ADD)
            if not keeps_zero:
                ctx.never_zero(ctx.d(out, out_axis))
            out_axis += 1

    return rule


def _reduced_reason(ctx, x):
    """Why a reduced axis is pinned; a mean of squares is an RMSNorm written as ops (Llama, Qwen)."""
    source = ctx.producer(x)
    squares = source is not None and (
        (source.op_type == "Pow" and scalar(ctx.const(source.input[1])) == 2.0)
        or (source.op_type == "Mul" and source.input[0] == source.input[1]))
    if ctx.op == "ReduceMean" and squares:
        return f"normalized over by an RMSNorm (mean of squares at {ctx.label})"
    return f"reduced over by {ctx.label}"


# --- data movement ---------------------------------------------------------------------------


def transpose(ctx):
    x, out = ctx.input(0), ctx.output()
    rank = ctx.rank(x)
    if rank is None:
        return ctx.pin_all(f"{ctx.label}: shape unknown")
    perm = ctx.attr("perm", list(reversed(range(rank))))
    for out_axis, in_axis in enumerate(perm):
        ctx.same(ctx.d(x, in_axis), ctx.d(out, out_axis), MUL)


def concat(ctx):
    """Each input is a segment of the output axis; the output channel is zero only if its input's is."""
    _segments(ctx, ctx.output(), list(ctx.node.input), ADD, whole_is_output=True)


def split(ctx):
    """Each output is a segment of the input axis."""
    _segments(ctx, ctx.input(0), list(ctx.node.output), MUL, whole_is_output=False)


def _segments(ctx, whole, parts, role, whole_is_output):
    rank = ctx.rank(whole)
    if rank is None:
        return ctx.pin_all(f"{ctx.label}: shape unknown")
    axis = ctx.attr("axis", 0) % rank
    start = 0
    # along a symbolic axis (a KV cache's past + new positions) no channels live: only the others couple
    symbolic = not isinstance(ctx.shape(whole)[axis], int)
    for part in parts:
        shape = ctx.shape(part)
        if shape is None or (not symbolic and not isinstance(shape[axis], int)):
            return ctx.pin_all(f"{ctx.label}: segment sizes unknown")
        for a in range(rank):
            if a == axis and symbolic:
                continue
            if a == axis:
                ctx.offset(ctx.d(part, a), ctx.d(whole, a), start, role=role, whole_is_output=whole_is_output)
            elif whole_is_output:
                ctx.same(ctx.d(part, a), ctx.d(whole, a), role)
            else:
                ctx.same(ctx.d(whole, a), ctx.d(part, a), role)
        start += 0 if symbolic else shape[axis]


def slice_rule(ctx):
    x, out = ctx.input(0), ctx.output()
    shape = ctx.shape(x)
    starts, ends = ctx.const(ctx.input(1)), ctx.const(ctx.input(2))
    axes = ctx.const(ctx.input(3)) if ctx.input(3) else None
    steps = ctx.const(ctx.input(4)) if ctx.input(4) else None
    if shape is None or starts is None or ends is None or (ctx.input(3) and axes is None) or (ctx.input(4) and steps is None):
        return ctx.pin_all(f"{ctx.label}: bounds computed at run time")
    axes = list(range(len(starts))) if axes is None else [int(a) % len(shape) for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    sliced, dynamic = {}, set()
    for a, s, e, step in zip(axes, starts, ends, steps):
        if isinstance(shape[a], int):
            sliced[a] = slice(int(s), int(e), step).indices(shape[a])
        else:
            dynamic.add(a)
    for a in range(len(shape)):
        if a in dynamic:  # no channels live on a symbolic axis (a batch): only a fixed-size piece of it has dims
            ctx.pin(out, a, f"{ctx.label}: slices a dynamic axis")
        elif a in sliced:
            first, _, step = sliced[a]
            ctx.offset(ctx.d(out, a), ctx.d(x, a), first, step, role=MUL, whole_is_output=False)
        else:
            ctx.same(ctx.d(x, a), ctx.d(out, a), MUL)


def pad(ctx):
    """A zero-fill constant Pad is a Concat of the input with zero segments: input position i is output
    position begin + i on each padded axis, and the padded positions are exact zeros (ctx.zeros). Other
    modes copy input positions into the padding, and negative pads crop: those axes are pinned."""
    x, out = ctx.input(0), ctx.output()
    rank = ctx.rank(x)
    padded = pad_widths(ctx.node, ctx.const, rank)
    fill = pad_fill(ctx.node, ctx.const)
    if rank is None or padded is None or fill is UNKNOWN:
        return ctx.pin_all(f"{ctx.label}: pads computed at run time")
    constant = ctx.attr("mode", "constant") == "constant"
    for a in range(rank):
        begin, end = padded.get(a, (0, 0))
        if fill != 0.0 and any(b != a for b in padded):
            ctx.never_zero(ctx.d(out, a))  # the fill lands in every position of this axis
        if not (begin or end):
            ctx.same(ctx.d(x, a), ctx.d(out, a), MUL)
        elif constant and begin >= 0 and end >= 0 and isinstance(ctx.shape(x)[a], int):
            _zero_segments(ctx, x, out, a, begin, end, zero_fill=fill == 0.0)
        else:
            ctx.pin(x, a, f"padded by {ctx.label}")
            ctx.pin(out, a, f"padded by {ctx.label}")


def _zero_segments(ctx, x, out, axis, begin, end, zero_fill):
    """Axis `axis` of out is [begin padded positions, x's positions, end padded positions]; the padded
    positions of both ends are one zero dim (one group where they meet channels)."""
    whole, size = ctx.d(out, axis), ctx.shape(x)[axis]
    ctx.offset(ctx.d(x, axis), whole, begin, role=ADD)
    if not zero_fill or whole is None:
        return  # padded positions hold the fill: never zero (no zero source reaches them)
    filler = ctx.space.dim(f"{out}#padding", axis, begin + end)
    ctx.zeros(filler)
    positions = list(range(begin)) + list(range(begin + size, begin + size + end))
    ctx.space.link(filler, range(begin + end), whole, positions)
    ctx.source(whole, filler, ADD)


def reshape(ctx):
    """Match axes by products: 1:1 axes couple; a split axis couples with its outer part, a merge too.

    (N, C, H, W) -> (N, C*H*W): channel c is the block [c*H*W, (c+1)*H*W);
    (N, S, H*d) -> (N, S, H, d): head h is the block [h*d, (h+1)*d); the inner axes are pinned.
    """
    x, out = ctx.input(0), ctx.output()
    runs = match_reshape(*resolve_fresh_symbol(ctx.shape(x), ctx.shape(out)))
    if runs is None:
        return ctx.pin_all(f"{ctx.label}: cannot map axes (shapes {ctx.shape(x)} -> {ctx.shape(out)})")
    for ins, outs in runs:
        in_dims = [ctx.d(x, a) for a in ins]
        out_dims = [ctx.d(out, a) for a in outs]
        if len(ins) == 1 and len(outs) == 1:
            ctx.same(in_dims[0], out_dims[0], MUL)
        elif len(ins) == 1:
            _split_axis(ctx, in_dims[0], out_dims, outs)
        elif len(outs) == 1:
            _merge_axes(ctx, in_dims, out_dims[0], ins)
        else:
            for d in in_dims + out_dims:
                if d is not None:
                    ctx.space.pin(d, f"{ctx.label}: axes regrouped")


def _split_axis(ctx, whole, parts, axes):
    sizes = [ctx.shape(ctx.output())[a] for a in axes]
    k = _channel_axis(ctx, parts, sizes)
    ctx.strided(parts[k], whole, sizes, k, role=MUL, whole_is_output=False)
    for j, d in enumerate(parts):
        if j != k and d is not None:
            ctx.space.pin(d, f"inner axis of a split by {ctx.label}")


def _merge_axes(ctx, parts, whole, axes):
    sizes = [ctx.shape(ctx.input(0))[a] for a in axes]
    k = _channel_axis(ctx, parts, sizes)
    ctx.strided(parts[k], whole, sizes, k, role=MUL)
    for j, d in enumerate(parts):
        if j != k and d is not None:
            ctx.space.pin(d, f"inner axis of a merge by {ctx.label}")


def _channel_axis(ctx, parts, sizes):
    """Which of the regrouped axes carries channels: one already coupled to parameters (NHWC
    flatten: the last), else the outermost (NCHW flatten: C; attention heads: H)."""
    real = [k for k, s in enumerate(sizes) if s > 1]
    with_params = [k for k in real if parts[k] is not None and ctx.space.carries_params(parts[k])]
    return (with_params or real)[0]


def match_reshape(src, dst):
    """Pair runs of axes with equal products: [(input axes, output axes)]; None when they don't match."""
    if src is None or dst is None:
        return None
    runs, i, j = [], 0, 0
    while True:
        while i < len(src) and src[i] == 1:
            i += 1
        while j < len(dst) and dst[j] == 1:
            j += 1
        if i == len(src) or j == len(dst):
            return runs if i == len(src) and j == len(dst) else None
        a, b = src[i], dst[j]
        if not isinstance(a, int) or not isinstance(b, int):
            fresh = isinstance(a, str) and isinstance(b, str) and b not in src and a not in dst
            if (a != b and not fresh) or a is None:  # a fresh symbol (from -1) stands for the one it replaces
                return None
            runs.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        ins, outs, pa, pb = [i], [j], a, b
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb:
                if i == len(src) or not isinstance(src[i], int):
                    return None
                pa, ins, i = pa * src[i], ins + [i], i + 1
            else:
                if j == len(dst) or not isinstance(dst[j], int):
                    return None
                pb, outs, j = pb * dst[j], outs + [j], j + 1
        runs.append((ins, outs))


def squeeze_like(ctx):
    """Squeeze/Unsqueeze/Flatten are reshapes whose output shape inference already knows."""
    reshape(ctx)


def keep_channels(ctx):
    """Resize/Upsample/Expand/Tile: axes whose size is unchanged pass through."""
    x, out = ctx.input(0), ctx.output()
    sx, so = ctx.shape(x), ctx.shape(out)
    if sx is None or so is None:
        return ctx.pin_all(f"{ctx.label}: shape unknown")
    shift = len(so) - len(sx)
    for a in range(len(so)):
        src = ctx.d(x, a - shift) if a >= shift else None
        dst = ctx.d(out, a)
        if src is not None and dst is not None and ctx.space.sizes[src] == ctx.space.sizes[dst]:
            ctx.same(src, dst, MUL)
        elif src is not None:
            ctx.pin(x, a - shift, f"resized by {ctx.label}")


def no_coupling(ctx):
    """Reads only shapes (Shape, Size) or makes integers: nothing to couple, nothing pinned."""
