"""DepthToSpace / SpaceToDepth (no gradient registered) as Reshape, Transpose, Reshape."""
from ...ops import attribute
from .context import Context, Unsupported


def depth_to_space(node, ctx: Context) -> None:
    x, base = node.input[0], node.name or node.output[0]
    b = attribute(node, "blocksize")
    shape = ctx.shape(x)
    if shape is None or len(shape) != 4 or shape[1] is None:
        raise Unsupported("needs a 4-D input with a static channel count")
    c = shape[1] // (b * b)
    if attribute(node, "mode", "DCR") == "DCR":
        split, perm = [0, b, b, c, (2, 1), (3, 1)], [0, 3, 4, 1, 5, 2]
    else:  # CRD
        split, perm = [0, c, b, b, (2, 1), (3, 1)], [0, 1, 4, 2, 5, 3]
    blocks = ctx.emit("Reshape", [x, ctx.shape_vector(x, split, f"{base}_split")], base=f"{base}_blocks")
    moved = ctx.emit("Transpose", [blocks], base=f"{base}_moved", perm=perm)
    ctx.emit("Reshape", [moved, ctx.shape_vector(x, [0, c, (2, b), (3, b)], f"{base}_merged")], node.output[0], base=base)


def space_to_depth(node, ctx: Context) -> None:
    x, base = node.input[0], node.name or node.output[0]
    b = attribute(node, "blocksize")
    shape = ctx.shape(x)
    if shape is None or len(shape) != 4 or None in shape[1:]:
        raise Unsupported("needs a 4-D input with static C, H, W")
    _, c, h, w = shape
    blocks = ctx.emit("Reshape", [x, ctx.ints([0, c, h // b, b, w // b, b], f"{base}_split")], base=f"{base}_blocks")
    moved = ctx.emit("Transpose", [blocks], base=f"{base}_moved", perm=[0, 3, 5, 1, 2, 4])
    ctx.emit("Reshape", [moved, ctx.ints([0, c * b * b, h // b, w // b], f"{base}_merged")], node.output[0], base=base)
