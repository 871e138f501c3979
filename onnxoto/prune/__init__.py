"""`onnxoto prune`: the pipeline from an ONNX file and data to a smaller, certified ONNX file."""
from .options import PruneOptions
from .run import PruneResult, prune

__all__ = ["PruneOptions", "PruneResult", "prune"]
