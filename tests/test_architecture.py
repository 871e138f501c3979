"""ARCHITECTURE.md's picture, checked: imports go down the layers, and across packages only through a
package's __init__ (no other package's module-private names)."""
import ast
import os

import onnxoto

ROOT = os.path.dirname(onnxoto.__file__)
# package -> the packages it may import (ARCHITECTURE.md, "The picture")
ALLOWED = {
    "errors": set(), "lazy": set(), "progress": set(), "child": {"errors", "progress"}, "ops": {"errors"},
    "optim": {"errors"},
    "graph": {"errors", "ops", "child"},
    "groups": {"errors", "graph", "ops"},
    "train": {"errors", "graph", "ops", "lazy", "child", "progress"},
    "surgery": {"errors", "graph", "groups", "ops"},
    "dist": {"errors", "train"},
    "verify": {"errors", "graph", "groups", "surgery", "ops", "child", "progress"},
    "latency": {"errors", "graph", "groups", "surgery", "verify", "optim", "progress"},
    "report": {"errors", "graph", "groups", "verify", "progress", "latency"},
    "prune": {"errors", "lazy", "graph", "groups", "surgery", "verify", "optim", "train", "dist", "report", "ops",
              "child", "progress", "latency"},
}


def imports():
    """(importing package, imported package, imported module path inside it, file) for every onnxoto import."""
    for folder, _, files in os.walk(ROOT):
        for name in (f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, ROOT).split(os.sep)
            package = parts[0][:-3] if len(parts) == 1 else parts[0]
            for node in ast.walk(ast.parse(open(path).read())):
                if not isinstance(node, ast.ImportFrom):
                    continue
                if node.level:  # relative: resolve against this file's package path
                    base = parts[:-1][:len(parts) - node.level]
                    target = base + (node.module.split(".") if node.module else [])
                elif node.module and node.module.split(".")[0] == "onnxoto":
                    target = node.module.split(".")[1:]
                else:
                    continue
                if target:
                    yield package, target[0], target[1:], os.path.relpath(path, ROOT)


def test_imports_go_down_the_layers():
    wrong = sorted({(f, imported) for package, imported, _, f in imports()
                    if package in ALLOWED and imported != package and imported not in ALLOWED[package]})
    assert not wrong, wrong


def test_other_packages_are_imported_through_their_init():
    wrong = sorted({(f, ".".join([imported, *inner])) for package, imported, inner, f in imports()
                    if imported != package and inner})
    assert not wrong, wrong
