"""Small models on which onnxruntime itself dies (SIGFPE), as it does inside real models' kernels at
sizes they do not expect: an integer division by a size that comes out zero."""
import numpy as np
from onnx import TensorProto

from edge_helpers import Net


def sigfpe_below(min_size=32, channels=4, seed=0):
    """Conv -> Relu -> Conv on x (N, 3, H, W), its output scaled by 64 // (H // min_size): onnxruntime's
    integer Div dies of SIGFPE whenever H < min_size. Conv1's channels are a prunable group."""
    net = Net(opset=13, seed=seed)
    x = net.input("x", ("N", 3, "H", "W"))
    h = net.op("Relu", [net.conv(x, 3, channels, name="conv1")])
    y = net.conv(h, channels, 2, name="conv2")
    size = net.op("Gather", [net.op("Shape", [x]), net.ints("two", 2)], axis=0)
    blocks = net.op("Div", [size, net.ints("min_size", min_size)])
    scale = net.op("Cast", [net.op("Div", [net.ints("sixty_four", 64), blocks])], to=TensorProto.FLOAT)
    return net.model(net.op("Mul", [y, scale], name="out"))


def images(rows, size, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, 3, size, size)).astype(np.float32)


def batch_one_cnn(symbolic_ok=True, seed=0):
    """Conv -> Relu -> Conv -> Flatten -> Gemm with the batch fixed to 1 in the file (N=1, 3, 8, 8).
    symbolic_ok=False flattens with Reshape to [1, -1], as some exports do: then the model only runs on
    one row at a time."""
    net = Net(opset=13, seed=seed)
    x = net.input("x", (1, 3, 8, 8))
    h = net.op("Relu", [net.conv(x, 3, 4, name="conv1")])
    h = net.op("Relu", [net.conv(h, 4, 4, name="conv2")])
    flat = net.op("Flatten", [h], axis=1) if symbolic_ok else net.op("Reshape", [h, net.ints("one_row", [1, -1])])
    return net.model(net.linear(flat, 4 * 8 * 8, 3, name="fc"))


def log_net(seed=0):
    """Log -> Conv -> Relu -> Conv: on generated (standard normal) inputs the output has NaNs."""
    net = Net(opset=13, seed=seed)
    x = net.op("Log", [net.input("x", ("N", 3, 8, 8))])
    h = net.op("Relu", [net.conv(x, 3, 4, name="conv1")])
    return net.model(net.conv(h, 4, 2, name="out"))


def mask_and_index_net(vocab=7):
    """An embedding looked up through a Cast from int32 ids, times an int64 mask (N, T) cast to float."""
    net = Net(opset=13)
    ids = net.input("ids", ("N", "T"), dtype=TensorProto.INT32)
    mask = net.input("mask", ("N", "T"), dtype=TensorProto.INT64)
    table = net.weight("embedding", (vocab, 4))
    rows = net.op("Gather", [table, net.op("Cast", [ids], to=TensorProto.INT64)], axis=0)
    weight = net.op("Unsqueeze", [net.op("Cast", [mask], to=TensorProto.FLOAT), net.ints("last", [-1])])
    return net.model(net.op("Mul", [rows, weight], name="out"))


def channel_shuffle_net(seed=0):
    """ShuffleNetV2's channel shuffle with a symbolic batch and size, as torch exports it: Reshape to
    (n, 2, 4, h, w) with a target computed from Shape, Transpose, Reshape back; then a branch
    1x1 conv -> depthwise conv -> 1x1 conv whose 6 middle channels are prunable."""
    net = Net(opset=13, seed=seed)
    x = net.input("x", ("N", 8, "H", "W"))
    h = net.op("Relu", [net.conv(x, 8, 8, k=1, name="conv1")])
    shape = net.op("Shape", [h])
    n, rows, cols = (net.op("Unsqueeze", [net.op("Gather", [shape, net.ints(f"at{k}", k)], axis=0),
                                          net.ints(f"axis{k}", [0])]) for k in (0, 2, 3))
    split = net.op("Concat", [n, net.ints("groups", [2]), net.ints("per_group", [4]), rows, cols], axis=0)
    shuffled = net.op("Transpose", [net.op("Reshape", [h, split])], perm=[0, 2, 1, 3, 4])
    merged = net.op("Reshape", [shuffled, net.op("Concat", [n, net.ints("rest", [-1]), rows, cols], axis=0)])
    mid = net.op("Relu", [net.conv(merged, 8, 6, k=1, name="branch_in")])
    mid = net.op("Relu", [net.conv(mid, 6, 6, k=3, group=6, name="branch_dw")])
    return net.model(net.conv(mid, 6, 4, k=1, name="branch_out"))


def stateful_net(seed=0):
    """Silero VAD's inputs in small: audio-like x (N, 3, 8, 8), a recurrent state (2, N, 4) whose batch is
    on axis 1, and a scalar int64 sample rate `sr`; outputs `out` and the next state (2, N, 4). Conv -> Relu -> Conv -> pooled, concatenated with the
    state (the Concat needs the state's batch to be x's) -> Gemm, scaled by sr / 16000. Conv1's channels
    and the Gemm's input are prunable groups."""
    net = Net(opset=13, seed=seed)
    x = net.input("x", ("N", 3, 8, 8))
    state = net.input("state", (2, "N", 4))
    sr = net.input("sr", (), dtype=TensorProto.INT64)
    h = net.op("Relu", [net.conv(x, 3, 6, name="conv1")])
    h = net.op("Relu", [net.conv(h, 6, 5, name="conv2")])
    pooled = net.op("Flatten", [net.op("GlobalAveragePool", [h])], axis=1)
    carried = net.op("Flatten", [net.op("Transpose", [state], perm=[1, 0, 2])], axis=1)
    y = net.linear(net.op("Concat", [pooled, carried], axis=1), 5 + 8, 3, name="fc")
    rate = net.op("Div", [net.op("Cast", [sr], to=TensorProto.FLOAT), net.const("rate_16k", np.float32(16000))])
    state_out = net.op("Tanh", [state], name="stateN")  # an output without rows, as Silero's stateN
    return net.model([net.op("Mul", [y, rate], name="out"), state_out])
