"""Models past protobuf's 2 GiB: written with their weights in a data file beside them, run without
serializing the weights. A ModelProto that holds more than 2 GiB cannot be serialized at all, so
both go tensor by tensor through a skeleton (the proto without its large initializers)."""
import os
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ModelError

SERIALIZE_LIMIT = 1 << 31  # protobuf refuses to serialize a message of this many bytes
SAFE_SIZE = 3 << 29  # 1.5 GiB: above it a model is written and run through a skeleton
EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay inside the .onnx file (onnx's own default)


def is_large(proto):
    """Whether `proto` is too close to protobuf's limit to serialize whole."""
    # a message past the limit cannot even be sized whole; its initializers (each under it) can
    return sum(t.ByteSize() for t in proto.graph.initializer) > SAFE_SIZE


def has_external_data(path):
    """Whether the ONNX file at `path` keeps some tensor in an external data file."""
    skeleton = onnx.load_model(os.fspath(path), load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in skeleton.graph.initializer)


def save(proto, path, external=None):
    """Write `proto` to `path` atomically: a temporary file in the same folder, then a rename, so a
    failed write leaves nothing behind. external: keep tensors of 1 KiB and more in `<file>.data` beside
    it (None: when the model is too large for one file). The data file is renamed first: the .onnx that
    names it appears last."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    external = is_large(proto) if external is None else external
    data_name = os.path.basename(path) + ".data"
    scratch = tempfile.mkdtemp(prefix=".onnxoto-", dir=folder)
    try:
        staged = os.path.join(scratch, os.path.basename(path))
        if external:
            _write_with_data_file(proto, staged, data_name)
            os.replace(os.path.join(scratch, data_name), os.path.join(folder, data_name))
        else:
            onnx.save(proto, staged)
        os.replace(staged, path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot write the model ({exc.strerror or exc})") from None
    finally:
        for name in os.listdir(scratch):
            os.remove(os.path.join(scratch, name))
        os.rmdir(scratch)


def detached(proto, min_bytes=EXTERNAL_MIN_BYTES):
    """(the proto whose initializers of `min_bytes` or more are headers naming external data, those
    initializers as arrays): what onnxruntime's add_external_initializers takes."""
    large = {t.name for t in proto.graph.initializer if _nbytes(t) >= min_bytes}
    arrays = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer if t.name in large}
    return _headers(proto, large), arrays


def check(proto):
    """onnx.checker on `proto`; one too large to serialize is checked without its large tensors' data."""
    if is_large(proto):  # the large tensors as declared inputs: the checker reads a header's data file
        skeleton = _skeleton(proto)
        for tensor in proto.graph.initializer:
            if _nbytes(tensor) >= EXTERNAL_MIN_BYTES:
                skeleton.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                                                               list(tensor.dims)))
            else:
                skeleton.graph.initializer.append(tensor)
        proto = skeleton
    onnx.checker.check_model(proto)


def _headers(proto, names):
    """The skeleton of `proto` with the initializers in `names` as headers naming data held elsewhere."""
    skeleton = _skeleton(proto)
    for tensor in proto.graph.initializer:
        if tensor.name in names:
            _external_header(skeleton, tensor, "detached", 0, _data_bytes(tensor))
        else:
            skeleton.graph.initializer.append(tensor)
    return skeleton


def _data_bytes(tensor):
    count = int(np.prod(tensor.dims, dtype=np.int64)) if len(tensor.dims) else 1
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _write_with_data_file(proto, path, data_name):
    """The skeleton to `path`, each large tensor's bytes appended to `data_name` beside it (aligned to
    4 KiB, so that a runtime can map them)."""
    skeleton = _skeleton(proto)
    with open(os.path.join(os.path.dirname(path), data_name), "wb") as data:
        for tensor in proto.graph.initializer:
            if _nbytes(tensor) < EXTERNAL_MIN_BYTES:
                skeleton.graph.initializer.append(tensor)
                continue
            data.seek(-data.tell() % 4096, os.SEEK_CUR)
            offset = data.tell()
            payload = numpy_helper.to_array(tensor).tobytes() if not tensor.HasField("raw_data") else tensor.raw_data
            data.write(payload)
            _external_header(skeleton, tensor, data_name, offset, len(payload))
    onnx.save(skeleton, path)


def _external_header(skeleton, tensor, location, offset, length):
    """Append to the skeleton's initializers `tensor` without its data, naming where the data lies."""
    header = skeleton.graph.initializer.add()
    header.name, header.data_type = tensor.name, tensor.data_type
    header.dims.extend(tensor.dims)
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        header.external_data.add(key=key, value=str(value))
    header.data_location = onnx.TensorProto.EXTERNAL


def _skeleton(proto):
    """A copy of `proto` whose main graph has no initializers (nothing large is copied)."""
    skeleton = _copy_fields(proto, onnx.ModelProto(), skip="graph")
    _copy_fields(proto.graph, skeleton.graph, skip="initializer")
    return skeleton


def _copy_fields(source, target, skip):
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if isinstance(value, (str, bytes, int, float)):
            setattr(target, field.name, value)
        elif hasattr(value, "extend"):  # a repeated field
            getattr(target, field.name).extend(value)
        elif hasattr(value, "ListFields"):  # a message
            getattr(target, field.name).CopyFrom(value)
    return target


def _nbytes(tensor):
    return tensor.ByteSize()  # the serialized size: no copy of the payload
