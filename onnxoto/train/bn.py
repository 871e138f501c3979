"""Recalibrate BatchNormalization running statistics on training data (training on batch statistics
leaves them stale)."""
import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import progress
from ..errors import ModelError
from ..graph import default_opset, fresh_name, session as graph_session, taken_names
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
    probe = _in_training_mode(copy.deepcopy(model))
    statistics = _expose_batch_statistics(probe)
    session = graph_session(probe)
    feed_names = [i.name for i in session.get_inputs()]
    fetched = [output for outputs in statistics.values() for output in outputs]
    totals = {name: _Moments() for name in statistics}
    total = -(-len(dataset) // batch_size)
    total = total if batches is None else min(batches, total)
    for k, batch in enumerate(progress.bar(dataset.batches(batch_size), total=total, desc="recalibrate BatchNorm",
                                           unit="batch")):
        if batches is not None and k >= batches:
            break
        values = iter(session.run(fetched, {name: batch[name] for name in feed_names}))
        for name in statistics:
            mean, var, size = next(values), next(values), next(values)
            count = int(size) // mean.size
            totals[name].add(mean, var * count, count)
    result = copy.deepcopy(model)
    for node in (n for n in result.graph.node if n.op_type == "BatchNormalization"):
        stats = totals[node.output[0]]
        _set_own_initializer(result.graph, node, 3, stats.mean)
        _set_own_initializer(result.graph, node, 4, stats.m2 / stats.count)
    return result


class _Moments:
    """Per-channel count, mean and sum of squared deviations, merged batch by batch in float64 (Chan et al.'s
    pairwise update: no cancellation of E[x^2] - E[x]^2, and all-zero channels stay exactly zero)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, mean: np.ndarray, m2: np.ndarray, count: int) -> None:
        mean, m2 = mean.astype(np.float64), m2.astype(np.float64)
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * count / total)
        self.count = total


def check_recalibration(model: onnx.ModelProto) -> None:
    """Raise the ModelError recalibration would raise, before training rather than after it."""
    if default_opset(model) < 14 and any(n.op_type == "BatchNormalization" for n in model.graph.node):
        _in_training_mode(copy.deepcopy(model))


def _expose_batch_statistics(probe: onnx.ModelProto) -> dict[str, tuple[str, str, str]]:
    """Per BatchNormalization of a training-mode probe (keyed by its output): graph outputs of its batch's
    per-channel mean and (population) variance, which it computes anyway to normalize, and of its input's
    element count. Momentum 0 makes the running-statistics outputs the batch's own: nothing else is
    computed or copied out (measured: copying every BN input out and reducing it in numpy took over half
    of recalibration)."""
    statistics = {}
    taken = taken_names(probe.graph)
    types = {init.name: init.data_type for init in probe.graph.initializer}
    for node in (n for n in probe.graph.node if n.op_type == "BatchNormalization"):
        kept = [a for a in node.attribute if a.name != "momentum"]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute("momentum", 0.0)])
        size = fresh_name(f"{node.output[0]}_input_size", taken)
        probe.graph.node.append(helper.make_node("Size", [node.input[0]], [size]))
        outputs = (node.output[1], node.output[2], size)
        stats_type = types.get(node.input[3], onnx.TensorProto.FLOAT)  # the running statistics' own type
        probe.graph.output.extend(helper.make_tensor_value_info(o, t, None) for o, t in
                                  zip(outputs, (stats_type, stats_type, onnx.TensorProto.INT64)))
        statistics[node.output[0]] = outputs
    return statistics


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
