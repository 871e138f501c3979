"""Stage 1: load and normalize an ONNX model (DESIGN.md §2.1)."""
import os
import tempfile

import onnx

from .inputs import (bind_input_shapes, declared, describe_sizes, misdeclared_outputs, parse_input_shapes,
                     redeclare_outputs)
from .load import bring_versions_in_range, check_domains, default_opset, read_model
from .model import Model
from .normalize import drop_unused_initializers, infer_shapes, know_shapes, normalize, row_axes
from .operands import node_reads
from .store import check as check_model, has_external_data, is_large, save
from .view import (batch_symbols, dims, display_name, fed_whole, fresh_name, producers, readers, row_count,
                   rowless_outputs, run, session, static_dims, take_rows, taken_names, whole_inputs, with_initializers,
                   with_outputs)

__all__ = ["Model", "batch_symbols", "check_model", "default_opset", "describe_sizes", "dims", "display_name",
           "drop_unused_initializers", "fed_whole", "fresh_name", "from_proto", "has_external_data", "infer_shapes",
           "is_large", "know_shapes", "load", "read_model", "misdeclared_outputs", "node_reads", "parse_input_shapes", "producers", "readers", "redeclare_outputs", "row_axes", "row_count",
           "rowless_outputs", "run", "save", "session", "static_dims", "take_rows", "taken_names", "whole_inputs",
           "with_initializers", "with_outputs"]


def load(path, strict=False, input_shapes=None):
    """Read, version-check and normalize the model at `path`.

    strict: refuse operators from unknown domains (commands that must run the model);
    analysis passes strict=False and shows such operators as barriers.
    input_shapes: {input name: sizes} fixing symbolic input dims before normalization (-1 keeps one).
    """
    name = os.path.basename(os.fspath(path))
    proto = read_model(path)
    if input_shapes:
        bind_input_shapes(proto, input_shapes, name)
    return _normalized(proto, name, strict, isolate=bool(input_shapes))


def from_proto(proto, name="model", strict=False):
    """Normalize a copy of an in-memory ModelProto."""
    copy = type(proto)()
    copy.CopyFrom(proto)
    return _normalized(copy, name, strict)


def _normalized(proto, name, strict, isolate=False):
    """isolate: normalize in a child process. Folding constants runs onnxruntime on the model's shape
    arithmetic, which at sizes a user bound can divide by zero (SIGFPE)."""
    if strict:
        check_domains(proto, name)
    proto = bring_versions_in_range(proto, name)
    if isolate and not os.environ.get("ONNXOTO_CHILD") and proto.ByteSize() < _ISOLATE_BELOW:
        return Model.from_proto(_normalized_in_child(proto, name), name)
    return Model.from_proto(normalize(proto, name), name)


_ISOLATE_BELOW = 1 << 30  # bytes: a larger model would need external data to reach the child


def _normalized_in_child(proto, name):
    from ..child import run_child
    with tempfile.TemporaryDirectory(prefix="onnxoto-normalize-") as folder:
        save(proto, os.path.join(folder, "model.onnx"))
        with open(os.path.join(folder, "name"), "w") as f:
            f.write(name)
        run_child("onnxoto.graph:normalize_here", folder, name)
        return onnx.load(os.path.join(folder, "normalized.onnx"))


def normalize_here(folder):
    """The child's side of _normalized_in_child."""
    from ..child import step
    with open(os.path.join(folder, "name")) as f:
        name = f.read()
    proto = onnx.load(os.path.join(folder, "model.onnx"))
    sizes = ", ".join(f"{i.name} {declared(i)}" for i in proto.graph.input)
    step(f"folding the shape arithmetic at the input sizes {sizes}")
    save(normalize(proto, name), os.path.join(folder, "normalized.onnx"))
