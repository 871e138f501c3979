"""ConvTranspose (no CPU ConvTransposeGrad) as zero insertion, padding and a Conv.

The Conv's weight is the transposed, flipped kernel: a new parameter, trained in that layout;
ParamMap carries it back to the ConvTranspose layout for export.
"""
import numpy as np

from ...ops import attribute
from .context import Context, Unsupported
from .param_map import ConvTransposeLayout


def conv_transpose(node, ctx: Context) -> None:
    x, weight_name, base = node.input[0], node.input[1], node.name or node.output[0]
    weight = ctx.value(weight_name)
    if weight is None or weight_name not in ctx.initializers:
        raise Unsupported("weight is not an initializer")
    if any(r.op_type != "ConvTranspose" or list(r.input[1:2]) != [weight_name] for r in ctx.readers[weight_name]):
        raise Unsupported("weight is read by other nodes too")
    group = attribute(node, "group", 1)
    kernel = list(weight.shape[2:])
    n = len(kernel)
    strides = list(attribute(node, "strides", [1] * n))
    dilations = list(attribute(node, "dilations", [1] * n))
    output_padding = list(attribute(node, "output_padding", [0] * n))
    begin, end = _pads(node, ctx, kernel, strides, dilations, output_padding)
    spatial_shape = ctx.shape(x)
    if spatial_shape is None or len(spatial_shape) != n + 2:
        raise Unsupported("input rank unknown")

    upsampled = _insert_zeros(ctx, x, strides, base) if any(s > 1 for s in strides) else x
    # Conv with stride 1 over the zero-inserted map, padded by d(k-1) - p; the zeros the
    # Reshape left after the last element ((s-1) of them) count towards the end padding.
    lead = [d * (k - 1) - p for d, k, p in zip(dilations, kernel, begin)]
    tail = [d * (k - 1) - p + op - (s - 1) for d, k, p, op, s in zip(dilations, kernel, end, output_padding, strides)]
    padded = _pad_or_crop(ctx, upsampled, lead, tail, base)

    layout = _layout_for(ctx, ctx.param_map, weight_name, group, weight)
    inputs = [padded, layout.training] + ([node.input[2]] if len(node.input) > 2 and node.input[2] else [])
    ctx.emit("Conv", inputs, node.output[0], base=base, kernel_shape=kernel, dilations=dilations, group=group,
             strides=[1] * n, pads=[0] * 2 * n)


def _pads(node, ctx: Context, kernel, strides, dilations, output_padding) -> tuple[list, list]:
    n = len(kernel)
    auto_pad = attribute(node, "auto_pad", "NOTSET")
    output_shape = attribute(node, "output_shape")
    if auto_pad == "NOTSET" and output_shape is None:
        pads = list(attribute(node, "pads", [0] * 2 * n))
        return pads[:n], pads[n:]
    if auto_pad == "VALID" and output_shape is None:
        return [0] * n, [0] * n
    dims = ctx.static_shape(node.input[0], node)[2:]
    if output_shape is None:
        output_shape = [d * s for d, s in zip(dims, strides)]
    output_shape = list(output_shape)[-n:]
    begin, end = [], []
    for i in range(n):
        total = strides[i] * (dims[i] - 1) + output_padding[i] + (kernel[i] - 1) * dilations[i] + 1 - output_shape[i]
        small, large = total // 2, total - total // 2
        # onnxruntime puts the larger half first unless SAME_UPPER (also with output_shape and NOTSET)
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin, end


def _insert_zeros(ctx: Context, x: str, strides, base: str) -> str:
    """(N, C, H, W) -> (N, C, H*s, W*s) with x at multiples of s: a unit axis after each spatial
    axis, zero-padded to s, merged back."""
    n = len(strides)
    unit_axes = [3 + 2 * i for i in range(n)]
    grown = ctx.emit("Unsqueeze", [x, ctx.ints(unit_axes, f"{base}_unit_axes")], base=f"{base}_unit")
    end_pads = [0, 0] + sum(([0, s - 1] for s in strides), [])  # (N, C, H, 1, W, 1) -> (N, C, H, s, W, s)
    padded = ctx.emit("Pad", [grown, ctx.ints([0] * (2 + 2 * n) + end_pads, f"{base}_zero_pads")], base=f"{base}_zeros",
                      mode="constant")
    merged = [0, 0] + [(2 + i, s) for i, s in enumerate(strides)]
    return ctx.emit("Reshape", [padded, ctx.shape_vector(x, merged, f"{base}_merged")], base=f"{base}_upsampled")


def _pad_or_crop(ctx: Context, x: str, lead, tail, base: str) -> str:
    n = len(lead)
    if any(v > 0 for v in lead + tail):
        pads = [0, 0] + [max(v, 0) for v in lead] + [0, 0] + [max(v, 0) for v in tail]
        x = ctx.emit("Pad", [x, ctx.ints(pads, f"{base}_pads")], base=f"{base}_padded", mode="constant")
    if any(v < 0 for v in lead + tail):
        axes = [2 + i for i in range(n)]
        starts = [max(-v, 0) for v in lead]
        ends = [v if v < 0 else np.iinfo(np.int64).max for v in tail]
        x = ctx.emit("Slice", [x, ctx.ints(starts, f"{base}_crop_starts"), ctx.ints(ends, f"{base}_crop_ends"),
                               ctx.ints(axes, f"{base}_crop_axes")], base=f"{base}_cropped")
    return x


def _layout_for(ctx: Context, param_map, weight_name: str, group: int, weight: np.ndarray) -> ConvTransposeLayout:
    existing = param_map.layouts.get(param_map.training_name(weight_name))
    if existing is not None:
        if existing.group != group:
            raise Unsupported("weight shared by ConvTransposes with different groups")
        return existing
    layout = ConvTransposeLayout(weight_name, ctx.fresh(f"{weight_name}_as_conv"), group)
    ctx.add_initializer(layout.from_original(weight), layout.training)
    ctx.dropped_initializers.add(weight_name)
    param_map.add(layout)
    return layout
