"""Hard activations (no gradient registered in onnxruntime-training's CPU build) as Mul/Add/Clip."""
import numpy as np

from ...ops import attribute
from .context import Context


def _hard_sigmoid(x: str, alpha: float, beta: float, ctx: Context, base: str, output: str | None = None) -> str:
    """max(0, min(1, alpha * x + beta))."""
    scaled = ctx.emit("Mul", [x, ctx.const(np.array(alpha, np.float32), f"{base}_alpha")], base=f"{base}_scaled")
    shifted = ctx.emit("Add", [scaled, ctx.const(np.array(beta, np.float32), f"{base}_beta")], base=f"{base}_shifted")
    bounds = [ctx.const(np.array(0, np.float32), f"{base}_lo"), ctx.const(np.array(1, np.float32), f"{base}_hi")]
    return ctx.emit("Clip", [shifted, *bounds], output, base=f"{base}_clip")


def hard_sigmoid(node, ctx: Context) -> None:
    _hard_sigmoid(node.input[0], attribute(node, "alpha", 0.2), attribute(node, "beta", 0.5), ctx,
                  node.name or node.output[0], node.output[0])


def hard_swish(node, ctx: Context) -> None:
    """x * HardSigmoid(x) with alpha = 1/6, beta = 0.5 (the operator's definition)."""
    base = node.name or node.output[0]
    gate = _hard_sigmoid(node.input[0], 1 / 6, 0.5, ctx, base)
    ctx.emit("Mul", [node.input[0], gate], node.output[0], base=base)
