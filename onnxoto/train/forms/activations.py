"""Hard activations and PRelu (no gradient registered in onnxruntime-training's CPU build) as Mul/Add/Clip,
and Relu as a multiplication by its mask (onnxruntime's ReluGrad is far slower than a Mul)."""
import numpy as np
from onnx import TensorProto, helper

from ...ops import attribute
from .context import Context, NotNeeded, Unsupported


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


def relu(node, ctx: Context) -> None:
    """x * Cast(x > 0): the same values (-0.0 where x < 0) and, as a Mul, a gradient onnxruntime computes
    ~10x faster than its ReluGrad kernel (one scalar, branching pass; ~15% of a ResNet step at batch 128)."""
    x, base = node.input[0], node.name or node.output[0]
    elem_type = ctx.elem_type(x)
    if elem_type not in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
        raise NotNeeded("element type unknown: Relu trains as it is")
    zero = ctx.const(np.array(0, helper.tensor_dtype_to_np_dtype(elem_type)), f"{base}_zero")
    positive = ctx.emit("Greater", [x, zero], base=f"{base}_positive")
    mask = ctx.emit("Cast", [positive], base=f"{base}_mask", to=elem_type)
    ctx.emit("Mul", [x, mask], node.output[0], base=base)


def prelu(node, ctx: Context) -> None:
    """x * (m + slope * (1 - m)), m = Cast(x > 0): PRelu's values exactly (x where x > 0, slope * x elsewhere),
    from ops onnxruntime-training differentiates (no gradient is registered for PRelu), the slope's included."""
    x, slope, base = node.input[0], node.input[1], node.name or node.output[0]
    elem_type = ctx.elem_type(x)
    if elem_type not in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
        raise Unsupported("element type unknown")
    dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    positive = ctx.emit("Cast", [ctx.emit("Greater", [x, ctx.const(np.array(0, dtype), f"{base}_zero")],
                                          base=f"{base}_positive")], base=f"{base}_mask", to=elem_type)
    negative = ctx.emit("Sub", [ctx.const(np.array(1, dtype), f"{base}_one"), positive], base=f"{base}_negative")
    gate = ctx.emit("Add", [positive, ctx.emit("Mul", [slope, negative], base=f"{base}_sloped")], base=f"{base}_gate")
    ctx.emit("Mul", [x, gate], node.output[0], base=base)
