"""`onnxoto prune`: the pipeline from an ONNX file and data to a smaller, certified ONNX file.

The package is also the function: `onnxoto.prune(model, data=..., ...)` calls `prune.run.prune`.
Names load their module when first used: the CLI reads the options without onnxruntime.
"""
import sys
import types

from ..lazy import lazy_exports

_EXPORTS = {"PruneOptions": "options", "flag": "options", "override": "options", "PruneResult": "run", "prune": "run",
            "evaluate": "metric", "metric_kind": "metric", "session_model": "metric"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .run import prune
        return prune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
