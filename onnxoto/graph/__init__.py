"""Stage 1: load and normalize an ONNX model (DESIGN.md §2.1)."""
import os

from .load import bring_versions_in_range, check_domains, default_opset, read_model
from .model import Model
from .normalize import drop_unused_initializers, infer_shapes, normalize
from .operands import node_reads
from .view import (dims, display_name, fresh_name, producers, readers, run, session, static_dims, taken_names,
                   with_initializers, with_outputs)

__all__ = ["Model", "default_opset", "dims", "display_name", "drop_unused_initializers", "fresh_name", "from_proto",
           "infer_shapes", "load", "node_reads", "producers", "readers", "run", "session", "static_dims", "taken_names",
           "with_initializers", "with_outputs"]


def load(path, strict=False):
    """Read, version-check and normalize the model at `path`.

    strict: refuse operators from unknown domains (commands that must run the model);
    analysis passes strict=False and shows such operators as barriers.
    """
    name = os.path.basename(os.fspath(path))
    return _normalized(read_model(path), name, strict)


def from_proto(proto, name="model", strict=False):
    """Normalize a copy of an in-memory ModelProto."""
    copy = type(proto)()
    copy.CopyFrom(proto)
    return _normalized(copy, name, strict)


def _normalized(proto, name, strict):
    if strict:
        check_domains(proto, name)
    proto = bring_versions_in_range(proto, name)
    return Model.from_proto(normalize(proto, name), name)
