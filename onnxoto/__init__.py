"""onnxoto: structured pruning of ONNX models (zero-invariant groups, HESSO in onnxruntime-training, surgery).

    import onnxoto
    result = onnxoto.prune("model.onnx", data="train.npz", output="small.onnx", target_sparsity=0.5)

Stages, imported one way: graph -> groups -> surgery -> verify; optim (arrays only); train; prune drives them.
"""
import importlib

__version__ = "0.1.0"
_LAZY = {"prune", "graph", "groups", "surgery", "verify", "optim", "train", "report", "dist"}


def __getattr__(name):
    # heavy dependencies (onnxruntime) load only when a stage is used, so `onnxoto --help` stays fast
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'onnxoto' has no attribute {name!r}")
