"""Packages that load their modules when a name is first used, so `onnxoto --help` stays fast."""
import importlib


def lazy_exports(package, exports):
    """A module __getattr__ for `package` (its __name__): exports maps each public name to its module."""
    def __getattr__(name):
        if name in exports:
            return getattr(importlib.import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__
