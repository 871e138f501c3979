"""The one place that imports onnxruntime's training API, without importing torch.

`onnxruntime/training/__init__.py` imports torch (through `optim` and `amp`); the
submodules we use (`artifacts`, `onnxblock`, `api`) do not. Registering a bare
package module with the right `__path__` first lets Python import those
submodules without running the package `__init__`.
"""
import importlib
import os
import sys
import types

_EXPORTS = {
    "artifacts": ("onnxruntime.training.artifacts", None),
    "onnxblock": ("onnxruntime.training.onnxblock", None),
    "CheckpointState": ("onnxruntime.training.api", "CheckpointState"),
    "Module": ("onnxruntime.training.api", "Module"),
    "Optimizer": ("onnxruntime.training.api", "Optimizer"),
}

__all__ = list(_EXPORTS)


def _register_bare_package() -> None:
    import onnxruntime

    if "onnxruntime.training" in sys.modules:
        return  # real package already imported (torch present) or our stand-in is in place
    package = types.ModuleType("onnxruntime.training")
    package.__path__ = [os.path.join(os.path.dirname(onnxruntime.__file__), "training")]
    package.__package__ = "onnxruntime.training"
    sys.modules["onnxruntime.training"] = package


def __getattr__(name: str):
    """Load `artifacts`, `onnxblock`, `CheckpointState`, `Module`, `Optimizer` on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attribute = _EXPORTS[name]
    _register_bare_package()
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value
