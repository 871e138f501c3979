"""Read an ONNX file safely: size checks, external data confined to the model's folder, versions brought in range."""
import os

import onnx
from onnx import external_data_helper, version_converter

from ..errors import ModelError

MAX_IR_VERSION = 10  # onnxruntime-training 1.19 refuses newer IR
MAX_OPSET = 21
MIN_TRAINABLE_OPSET = 11  # Gemm gradients are invalid below opset 11
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"}


def read_model(path):
    """Parse `path` into a ModelProto with its external data loaded; raise ModelError on any bad input."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ModelError(f"{path}: empty file, not an ONNX model")
    try:
        model = onnx.load_model(path, load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{path}: not an ONNX model (no graph inside)")
    _load_external_data(model, os.path.dirname(os.path.abspath(path)), path)
    return model


def _load_external_data(model, folder, path):
    """Load external tensors, refusing any location that leaves the model's folder."""
    root = os.path.realpath(folder)
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = external_data_helper.ExternalDataInfo(tensor)
        target = os.path.realpath(os.path.join(root, info.location))
        if os.path.isabs(info.location) or os.path.commonpath([root, target]) != root:
            raise ModelError(f"{path}: external data '{info.location}' of tensor '{tensor.name}' lies outside the model's folder")
        if not os.path.isfile(target):
            raise ModelError(f"{path}: external data file '{info.location}' of tensor '{tensor.name}' is missing")
    try:
        external_data_helper.load_external_data_for_model(model, root)
    except Exception as exc:
        raise ModelError(f"{path}: cannot read external data ({exc})") from None


def default_opset(model):
    """The version of the default ONNX domain the model imports."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ModelError("model imports no version of the default ONNX operator set")


def check_domains(model, name):
    """Refuse operators from domains no runtime we use knows."""
    local = {f.domain for f in model.functions}
    for node in model.graph.node:
        if node.domain not in KNOWN_DOMAINS and node.domain not in local:
            raise ModelError(f"{name}: node '{node.name or node.output[0]}' uses operator {node.op_type} "
                             f"from unknown domain '{node.domain}'")


def bring_versions_in_range(model, name):
    """Convert the opset into [11, 21] and the IR version into [4, 10], or raise ModelError."""
    if not any(imp.domain in ("", "ai.onnx") for imp in model.opset_import):
        raise ModelError(f"{name}: the model imports no version of the default ONNX operator set (only "
                         f"{', '.join(sorted(imp.domain for imp in model.opset_import)) or 'none'}): nothing to prune")
    _weights_not_inputs(model)
    opset = default_opset(model)
    target = None
    if opset > MAX_OPSET:
        target = MAX_OPSET
    elif opset < MIN_TRAINABLE_OPSET:
        target = 13
    if target is not None:
        try:
            model = version_converter.convert_version(model, target)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{name}: opset {opset} cannot be converted to {target} ({first})") from None
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
    return model


def _weights_not_inputs(model):
    """Drop the graph inputs that name an initializer (in place), and raise the IR version to 4, from which
    initializers need not be inputs. IR 3 requires the listing, and exporters before it (Caffe2, PyTorch
    before 1.6) kept it: each weight is then also an input that a feed could override, which folding,
    training graphs (onnxruntime-training: "Duplicate definition-site") and cuts all trip over."""
    weights = {t.name for t in model.graph.initializer}
    if any(v.name in weights for v in model.graph.input):
        kept = [v for v in model.graph.input if v.name not in weights]
        del model.graph.input[:]
        model.graph.input.extend(kept)
    model.ir_version = max(model.ir_version, 4)
