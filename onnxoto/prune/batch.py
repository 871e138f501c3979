"""A batch size fixed to 1 in the file (tflite2onnx, some TorchScript exports).

If the model computes the same with a symbolic batch (checked by running both on a few rows, in a child
process), training and everything else run on whole batches of that relaxed model. Otherwise every
onnxruntime run takes one row at a time and training accumulates the gradients of --batch-size rows."""
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..child import run_child, step
from ..errors import ModelError

CHECK_ROWS = 3
_TOLERANCE = 1e-4  # of the batched outputs against the row-by-row ones, relative to their scale


@dataclass
class BatchPlan:
    relaxed: onnx.ModelProto | None  # the model with a symbolic batch, when it computes the same
    rows_per_run: int | None  # 1: one row per onnxruntime run, gradients accumulated
    line: str  # for the log


def fixed_batch_inputs(model):
    """Inputs whose first axis is the static size 1."""
    return [n for n in model.input_names if (model.shapes.get(n) or (None,))[:1] == (1,)]


def plan_batches(model, dataset, batch_size, what):
    """None when nothing is fixed to one row (or --batch-size is 1), else a BatchPlan."""
    fixed = fixed_batch_inputs(model)
    rows = min(CHECK_ROWS, len(dataset), batch_size)
    if not fixed or rows < 2:
        return None
    relaxed = with_symbolic_batch(model.proto, fixed)
    sample = next(dataset.batches(rows))
    same = batched_equals_rows(model.proto, relaxed, {n: sample[n] for n in model.input_names}, what)
    inputs = ", ".join(repr(n) for n in fixed)
    if same is True:
        return BatchPlan(relaxed, None, f"input {inputs} has batch size 1 in the file; the model computes the same "
                                        f"with a symbolic batch (checked on {rows} rows): training on batches of "
                                        f"{batch_size}, the written model has a symbolic batch")
    return BatchPlan(None, 1, f"input {inputs} has batch size 1 in the file and the model does not run with a "
                              f"symbolic batch ({same}): training one row at a time, gradients accumulated over "
                              f"{batch_size} rows per step")


def with_symbolic_batch(proto, inputs):
    """A copy whose `inputs` and batch-1 outputs have a symbolic first axis; inner shapes left to inference."""
    relaxed = onnx.ModelProto()
    relaxed.CopyFrom(proto)
    outputs = {o.name for o in relaxed.graph.output}
    for value in [*relaxed.graph.input, *relaxed.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if (value.name in inputs or value.name in outputs) and dims and dims[0].dim_value == 1:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del relaxed.graph.value_info[:]
    return relaxed


def batched_equals_rows(original, relaxed, feeds, what):
    """True if `relaxed` on all rows gives what `original` gives row by row; else the reason (one line)."""
    with tempfile.TemporaryDirectory(prefix="onnxoto-batch-") as folder:
        folder = Path(folder)
        onnx.save(original, folder / "original.onnx")
        onnx.save(relaxed, folder / "relaxed.onnx")
        np.savez(folder / "feeds.npz", **feeds)
        try:
            run_child("onnxoto.prune.batch:compare_here", folder, what)
        except ModelError as exc:
            return str(exc)
        result = json.loads((folder / "result.json").read_text())
    return True if result["same"] else result["reason"]


def compare_here(folder):
    """The child's side of batched_equals_rows."""
    import onnxruntime as ort

    folder = Path(folder)
    with np.load(folder / "feeds.npz", allow_pickle=False) as data:
        feeds = {n: data[n] for n in data.files}
    rows = len(next(iter(feeds.values())))
    step(f"running the model one row at a time on {rows} rows")
    original = ort.InferenceSession(str(folder / "original.onnx"), providers=["CPUExecutionProvider"])
    by_row = [original.run(None, {k: v[i:i + 1] for k, v in feeds.items()}) for i in range(rows)]
    step(f"running the model with a symbolic batch on {rows} rows")
    try:
        batched = ort.InferenceSession(str(folder / "relaxed.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _write(folder, False, reason[-200:])
    for k, out in enumerate(batched):
        expected = np.concatenate([row[k] for row in by_row], axis=0)
        if out.shape != expected.shape:
            return _write(folder, False, f"output {k} has shape {out.shape} on {rows} rows, not {expected.shape}")
        scale = max(float(np.max(np.abs(expected))) if expected.size else 0.0, 1e-30)
        if expected.size and float(np.max(np.abs(out.astype(np.float64) - expected))) > _TOLERANCE * scale:
            return _write(folder, False, f"output {k} differs from the row-by-row result")
    return _write(folder, True, "")


def _write(folder, same, reason):
    (folder / "result.json").write_text(json.dumps({"same": same, "reason": reason}))


class RowWise:
    """An onnxruntime InferenceSession of a batch-1 model, run one row at a time."""

    def __init__(self, session):
        self.session = session

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, names, feeds):
        rows = len(next(iter(feeds.values())))
        parts = [self.session.run(names, {k: v[i:i + 1] for k, v in feeds.items()}) for i in range(rows)]
        return [np.concatenate(outputs, axis=0) for outputs in zip(*parts)]
