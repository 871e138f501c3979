"""Stage 1: load and normalize an ONNX model (DESIGN.md §2.1)."""
import os

from .load import bring_versions_in_range, check_domains, read_model
from .model import Model
from .normalize import infer_shapes, normalize

__all__ = ["Model", "load", "from_proto"]


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
