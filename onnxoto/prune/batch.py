"""The model as the data meets it: symbolic sizes bound to the data's, and a batch size fixed to 1 in the
file (tflite2onnx, some TorchScript exports) or inside it (a traced view).

If the model computes the same with a symbolic batch (checked by running both on a few rows, in a child
process), training and everything else run on whole batches of that relaxed model. Otherwise every
onnxruntime run takes one row at a time and training accumulates the gradients of --batch-size rows.
Before any of it, the dense model runs on the first batch in a child process (onnxoto.child)."""
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .. import graph
from ..child import run_child, step
from ..errors import ModelError
from ..verify import check_finite, probe as probe_model

CHECK_ROWS = 3
_TOLERANCE = 1e-4  # of the batched outputs against the row-by-row ones, relative to their scale


@dataclass
class Fit:
    model: object  # graph.Model to prune
    rows_per_run: int | None  # 1: one row per onnxruntime run
    input_shapes: dict | None  # the sizes bound to symbolic input dims
    fixed_batch: bool  # the dense file itself takes one row per run
    row_axes: dict = field(default_factory=dict)  # one row per run: outputs whose rows are on another axis than 0


def model_for_data(path, dense, dataset, data, options, log):
    """The Fit of the model at `path` (loaded as `dense`) to `dataset`: symbolic sizes bound to the data's when
    no --input-shape is given, a batch fixed to 1 handled, and the dense model checked to run on the first
    batch with finite outputs, in a child process (onnxruntime may not survive sizes a model rejects)."""
    what, source = f"prune: {dense.name}", os.path.basename(os.fspath(data))
    shapes = options.input_shapes or data_shapes(dense, dataset)
    if shapes and not options.input_shapes:
        dense = graph.load(path, strict=True, input_shapes=shapes)
        log(f"{graph.describe_sizes(dense)}: bound from {source} (the written model keeps them; "
            "--input-shape NAME:DIMS with -1 keeps a dim symbolic)")
    plan = plan_batches(dense, dataset, options.batch_size, what)
    if plan is not None:
        log(plan.line)
        if plan.relaxed is not None:
            dense = graph.from_proto(plan.relaxed, dense.name, strict=True)
    rows_per_run = plan.rows_per_run if plan is not None else None
    first = next(dataset.batches(rows_per_run or options.batch_size))
    feeds = {n: first[n] for n in dense.input_names}
    result = probe_model(dense.proto, feeds, what)
    whole = graph.whole_inputs(dense.proto)
    rows = graph.row_count(feeds, whole) if dense.input_names else 0
    if not result.ran and rows > 1:  # a symbolic batch declared, but 1 fixed inside (a traced view)?
        single = probe_model(dense.proto, graph.take_rows(feeds, slice(0, 1), whole), what)
        if single.ran:
            log(f"the model does not run on {rows} rows ({result.error.split(': ', 1)[-1][:160]}) but does on "
                f"one: training one row at a time, gradients accumulated over {options.batch_size} rows per step")
            result, rows_per_run = single, 1
    if not result.ran:
        raise ModelError(f"{result.error} (on the first batch of {source})")
    check_finite(result, what, f"the first batch of {source}")
    dense = _outputs_as_run(dense, result.output_shapes, log)
    row_axes = graph.row_axes(graph.read_model(path)) if rows_per_run == 1 else {}
    if row_axes:
        log("rows on another axis than the first: " + ", ".join(f"output {n} axis {a}" for n, a in row_axes.items()))
    return Fit(dense, rows_per_run, shapes or None, plan is not None or rows_per_run == 1, row_axes)


def _outputs_as_run(dense, shapes, log):
    """`dense` with outputs whose declared shape the run contradicts declared by the rank they have (training
    targets take the shape of the output's declaration); the written model carries the corrected one."""
    wrong = graph.misdeclared_outputs(dense.proto, shapes)
    if not wrong:
        return dense
    for name, (declared, ran) in wrong.items():
        log(f"output {name} is declared {declared} but the model gives {ran}: declared by its rank in the "
            "training graph and in the written model")
    proto = onnx.ModelProto()
    proto.CopyFrom(dense.proto)
    graph.redeclare_outputs(proto, {name: len(shapes[name]) for name in wrong})
    return graph.from_proto(proto, dense.name, strict=True)


def data_shapes(model, dataset):
    """{input: (-1, sizes of the data)} for inputs with symbolic dims besides the batch; {} if none."""
    shapes = {}
    for name in model.input_names:
        dims = model.shapes.get(name) or ()
        if graph.fed_whole(dims):  # fed whole (a state 2 x batch x 128): its sizes bind nothing
            continue
        if any(not isinstance(d, int) for d in dims[1:]) and name in dataset.arrays:
            shapes[name] = (-1, *dataset.arrays[name].shape[1:])
    return shapes


def session_for(proto, rows_per_run, row_axes=None):
    """An inference session of `proto`; of a batch-1 model, run one row at a time (row_axes: Fit.row_axes)."""
    session = graph.session(proto)
    if not rows_per_run:
        return session
    return RowWise(session, graph.whole_inputs(proto), graph.rowless_outputs(proto), row_axes or {})


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
        graph.save(original, folder / "original.onnx")
        graph.save(relaxed, folder / "relaxed.onnx")
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
    whole = graph.whole_inputs(onnx.load(str(folder / "original.onnx"), load_external_data=False))
    rows = graph.row_count(feeds, whole)
    step(f"running the model one row at a time on {rows} rows")
    original = ort.InferenceSession(str(folder / "original.onnx"), providers=["CPUExecutionProvider"])
    by_row = [original.run(None, graph.take_rows(feeds, slice(i, i + 1), whole)) for i in range(rows)]
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

    def __init__(self, session, whole=frozenset(), rowless=frozenset(), row_axes=None):
        self.session, self.whole = session, whole  # whole: inputs fed whole to every run, not cut into rows
        self.rowless = rowless  # outputs without rows (graph.rowless_outputs): the last row's is returned
        self.row_axes = row_axes or {}  # outputs whose rows are on another axis (time-major): joined there

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, names, feeds):
        rows = graph.row_count(feeds, self.whole)
        parts = [self.session.run(names, graph.take_rows(feeds, slice(i, i + 1), self.whole)) for i in range(rows)]
        names = names or [o.name for o in self.session.get_outputs()]
        return [outputs[-1] if name in self.rowless else np.concatenate(outputs, axis=self.row_axes.get(name, 0))
                for name, outputs in zip(names, zip(*parts))]
