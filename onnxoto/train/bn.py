"""Recalibrate BatchNormalization running statistics on training data (training on batch statistics
leaves them stale)."""
import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import progress
from ..errors import ModelError
from ..graph import default_opset, fresh_name, session as graph_session, taken_names, with_outputs
from .data import Dataset


def recalibrate_batchnorm(model: onnx.ModelProto, dataset: Dataset, batches: int | None = 100,
                          batch_size: int = 64) -> onnx.ModelProto:
    """A copy of `model` whose BatchNormalization running mean/var are the population mean and
    (biased) variance per channel (axis 1) of each BN input over the first `batches` batches.

    The inputs are measured with every BatchNorm normalizing by its batch's statistics, as in
    training: measured through the old running statistics, a layer's input would depend on the
    stale statistics of the layers before it."""
    bn_nodes = [node for node in model.graph.node if node.op_type == "BatchNormalization"]
    if not bn_nodes:
        return model
    probe = _in_training_mode(with_outputs(model, [node.input[0] for node in bn_nodes]))
    session = graph_session(probe)
    feed_names = [i.name for i in session.get_inputs()]
    wanted = [node.input[0] for node in bn_nodes]
    sums: dict[str, np.ndarray] = {}
    squares: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    total = -(-len(dataset) // batch_size)
    total = total if batches is None else min(batches, total)
    for k, batch in enumerate(progress.bar(dataset.batches(batch_size), total=total, desc="recalibrate BatchNorm",
                                           unit="batch")):
        if batches is not None and k >= batches:
            break
        values = session.run(wanted, {name: batch[name] for name in feed_names})
        for name, value in zip(wanted, values):
            per_channel = np.moveaxis(value.astype(np.float64), 1, 0).reshape(value.shape[1], -1)
            sums[name] = sums.get(name, 0.0) + per_channel.sum(axis=1)
            squares[name] = squares.get(name, 0.0) + np.square(per_channel).sum(axis=1)
            counts[name] = counts.get(name, 0) + per_channel.shape[1]
    result = copy.deepcopy(model)
    for node in (n for n in result.graph.node if n.op_type == "BatchNormalization"):
        name = node.input[0]
        mean = sums[name] / counts[name]
        var = np.maximum(squares[name] / counts[name] - mean * mean, 0.0)
        _set_own_initializer(result.graph, node, 3, mean)
        _set_own_initializer(result.graph, node, 4, var)
    return result


def check_recalibration(model: onnx.ModelProto) -> None:
    """Raise the ModelError recalibration would raise, before training rather than after it."""
    if default_opset(model) < 14 and any(n.op_type == "BatchNormalization" for n in model.graph.node):
        _in_training_mode(copy.deepcopy(model))


def _in_training_mode(probe: onnx.ModelProto) -> onnx.ModelProto:
    """Every BatchNormalization normalizes by batch statistics (training_mode=1, opset >= 14); the
    running statistics outputs it then needs are left unread."""
    if default_opset(probe) < 14:
        try:
            probe = onnx.version_converter.convert_version(probe, 14)
        except Exception as exc:  # the converter's messages are C++ assertions
            raise ModelError(f"cannot recalibrate BatchNorm: converting opset {default_opset(probe)} to 14 failed "
                             f"({str(exc).splitlines()[-1][:120]}); train with --batchnorm frozen") from None
    taken = taken_names(probe.graph)
    for node in (n for n in probe.graph.node if n.op_type == "BatchNormalization"):
        kept = [a for a in node.attribute if a.name != "training_mode"]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute("training_mode", 1)])
        outputs = [node.output[0]] + [fresh_name(f"{node.output[0]}_running_{part}", taken) for part in ("mean", "var")]
        del node.output[:]
        node.output.extend(outputs)
    return probe


def _set_own_initializer(graph: onnx.GraphProto, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
    """Write `value` into the initializer at node.input[index]; a copy of its own if others read it too."""
    initializers = {init.name: init for init in graph.initializer}
    name = node.input[index]
    old = initializers[name]
    dtype = helper.tensor_dtype_to_np_dtype(old.data_type)
    readers = sum(list(other.input).count(name) for other in graph.node)
    if readers > 1:
        new_name, k = f"{name}_{node.output[0]}", 0
        while new_name in initializers:
            k += 1
            new_name = f"{name}_{node.output[0]}_{k}"
        graph.initializer.append(numpy_helper.from_array(value.astype(dtype), new_name))
        node.input[index] = new_name
    else:
        old.CopyFrom(numpy_helper.from_array(value.astype(dtype), name))
