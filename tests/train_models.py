"""Small models built with onnx.helper for the training-engine tests."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, inputs, outputs, initializers, name):
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(v.astype(np.float32) if v.dtype.kind == "f" else v, k)
                               for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def conv_bn_net(classes=4, seed=0):
    """Conv -> BatchNormalization (inference) -> Relu -> GAP -> Flatten -> Gemm: (N,1,6,6) -> (N, classes)."""
    rng = np.random.default_rng(seed)
    weights = {"conv.w": rng.standard_normal((6, 1, 3, 3)) * 0.5, "conv.b": np.zeros(6),
               "bn.scale": np.ones(6), "bn.bias": np.zeros(6),
               "bn.mean": rng.standard_normal(6), "bn.var": rng.uniform(0.5, 2, 6),
               "fc.w": rng.standard_normal((classes, 6)) * 0.5, "fc.b": np.zeros(classes),
               "shape": np.array([-1, 6], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Reshape", ["g", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], transB=1)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 6, 6])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])], weights, "conv_bn")


def mlp(inputs=3, hidden=8, outputs=2, seed=0):
    """MatMul+Add -> Tanh -> Gemm: (N, inputs) -> (N, outputs)."""
    rng = np.random.default_rng(seed)
    weights = {"w1": rng.standard_normal((inputs, hidden)) * 0.5, "b1": np.zeros(hidden),
               "w2": rng.standard_normal((outputs, hidden)) * 0.5, "b2": np.zeros(outputs)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m"]), helper.make_node("Add", ["m", "b1"], ["a"]),
             helper.make_node("Tanh", ["a"], ["h"]), helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], transB=1)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", inputs])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", outputs])], weights, "mlp")


def layernorm_net(seed=0):
    """MatMul -> LayerNormalization (Y only, as exporters write it) -> MatMul: (N, 4, 8) -> (N, 4, 3)."""
    rng = np.random.default_rng(seed)
    weights = {"w1": rng.standard_normal((8, 8)) * 0.3, "ln.g": np.ones(8), "ln.b": np.zeros(8),
               "w2": rng.standard_normal((8, 3)) * 0.3}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m"]),
             helper.make_node("LayerNormalization", ["m", "ln.g", "ln.b"], ["l"], axis=-1),
             helper.make_node("MatMul", ["l", "w2"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 3])], weights, "layernorm")


def two_output_net(seed=0):
    """A shared MatMul trunk with two heads: y1 (N, 2) and y2 (N, 3)."""
    rng = np.random.default_rng(seed)
    weights = {"w": rng.standard_normal((4, 6)) * 0.5, "h1": rng.standard_normal((6, 2)) * 0.5,
               "h2": rng.standard_normal((6, 3)) * 0.5}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Relu", ["t"], ["r"]),
             helper.make_node("MatMul", ["r", "h1"], ["y1"]), helper.make_node("MatMul", ["r", "h2"], ["y2"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                  [helper.make_tensor_value_info("y1", TensorProto.FLOAT, ["N", 2]),
                   helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["N", 3])], weights, "two_outputs")


def run(model, feeds):
    """Outputs of `model` by onnxruntime inference, as a list."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)
