"""`onnxoto prune`: the pipeline from an ONNX file and data to a smaller, certified ONNX file.

The package is also the function: `onnxoto.prune(model, data=..., ...)` calls `prune.run.prune`.
"""
import sys
import types

from .options import PruneOptions
from .run import PruneResult, prune

__all__ = ["PruneOptions", "PruneResult", "prune"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return prune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
