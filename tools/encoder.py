"""Generate transformer encoders of any size with onnx.helper (no torch): BERT-style blocks with
multi-head attention (Reshape/Transpose heads), erf-GELU FFN and LayerNorm, for scale benchmarks."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _Builder:
    def __init__(self, seed):
        self.nodes, self.inits, self.rng, self.count = [], [], np.random.default_rng(seed), 0

    def weight(self, name, shape, scale=0.02):
        self.inits.append(numpy_helper.from_array((self.rng.standard_normal(shape, np.float32) * scale), name))
        return name

    def const(self, name, values, dtype=np.int64):
        self.inits.append(numpy_helper.from_array(np.array(values, dtype), name))
        return name

    def op(self, op_type, inputs, **attrs):
        self.count += 1
        out = f"{op_type.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{op_type}_{self.count}", **attrs))
        return out

    def linear(self, x, prefix, d_in, d_out):
        y = self.op("MatMul", [x, self.weight(f"{prefix}.weight", (d_in, d_out))])
        return self.op("Add", [y, self.weight(f"{prefix}.bias", (d_out,))])

    def layer_norm(self, x, prefix, d):
        scale = self.weight(f"{prefix}.weight", (d,), 0.1)
        self.inits[-1] = numpy_helper.from_array(1 + numpy_helper.to_array(self.inits[-1]), scale)
        return self.op("LayerNormalization", [x, scale, self.weight(f"{prefix}.bias", (d,))], axis=-1)


def encoder(layers=12, hidden=768, heads=12, ffn=3072, vocab=30522, seq=128, seed=0):
    """A ModelProto: tokens (N, seq) int64 -> logits (N, 2) from the mean-pooled last layer."""
    b = _Builder(seed)
    head_dim = hidden // heads
    split = b.const("shape_heads", [0, seq, heads, head_dim])
    merge = b.const("shape_merged", [0, seq, hidden])
    x = b.op("Gather", [b.weight("embed.weight", (vocab, hidden)), "tokens"])
    x = b.op("Add", [x, b.weight("pos.weight", (1, seq, hidden))])
    x = b.layer_norm(x, "embed.norm", hidden)
    scale = b.const("attn_scale", [1.0 / np.sqrt(head_dim)], np.float32)
    for i in range(layers):
        p = f"layer{i}"
        q, k, v = (b.op("Transpose", [b.op("Reshape", [b.linear(x, f"{p}.{n}", hidden, hidden), split])], perm=perm)
                   for n, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])))
        scores = b.op("Mul", [b.op("MatMul", [q, k]), scale])
        attn = b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])
        attn = b.op("Reshape", [b.op("Transpose", [attn], perm=[0, 2, 1, 3]), merge])
        x = b.layer_norm(b.op("Add", [x, b.linear(attn, f"{p}.out", hidden, hidden)]), f"{p}.norm1", hidden)
        h = b.linear(x, f"{p}.ffn1", hidden, ffn)
        gate = b.op("Add", [b.op("Erf", [b.op("Mul", [h, b.const(f"{p}.rsqrt2", [0.70710678], np.float32)])]),
                            b.const(f"{p}.one", [1.0], np.float32)])
        h = b.op("Mul", [b.op("Mul", [h, gate]), b.const(f"{p}.half", [0.5], np.float32)])
        x = b.layer_norm(b.op("Add", [x, b.linear(h, f"{p}.ffn2", ffn, hidden)]), f"{p}.norm2", hidden)
    pooled = b.op("ReduceMean", [x, b.const("pool_axes", [1])], keepdims=0)
    logits = b.linear(pooled, "classifier", hidden, 2)
    b.nodes[-1].output[0] = "logits"
    graph = helper.make_graph(b.nodes, "encoder", [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", seq])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def parameter_count(model):
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT)


if __name__ == "__main__":
    m = encoder(layers=2, hidden=64, heads=4, ffn=128, vocab=100, seq=16)
    onnx.checker.check_model(m)
    print(parameter_count(m))
