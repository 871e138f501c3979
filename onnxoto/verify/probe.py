"""Runs of a whole model that onnxruntime might not survive, in a child process (onnxoto.child):
does the dense model run on these inputs, are its outputs finite, and which sizes does it accept."""
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import graph
from ..child import ChildCrashed, run_child, step
from ..errors import DataError, ModelError
from .inputs import has_free_sizes, has_symbolic_batch, random_inputs

SIZES = (16, 32, 64, 128, 256, 512)  # tried in turn for the symbolic dims besides the batch
_MODEL, _FEEDS, _RESULT = "model.onnx", "feeds.npz", "result.json"


@dataclass
class Probe:
    error: str = ""  # onnxruntime's refusal or crash, one line; empty if it ran
    finite: bool = True  # every float output finite
    output_shapes: dict | None = None

    @property
    def ran(self):
        return not self.error


def probe(proto, feeds, what):
    """Run `proto` on `feeds` in a child process; a refusal or a crash is returned as Probe.error."""
    with tempfile.TemporaryDirectory(prefix="onnxoto-probe-") as folder:
        folder = Path(folder)
        graph.save(proto, folder / _MODEL)
        np.savez(folder / _FEEDS, **feeds)
        try:
            run_child("onnxoto.verify.probe:run_here", folder, what)
        except ChildCrashed as exc:
            return Probe(error=str(exc))
        except ModelError as exc:
            return Probe(error=str(exc))
        result = json.loads((folder / _RESULT).read_text())
    return Probe(finite=result["finite"], output_shapes={k: tuple(v) for k, v in result["shapes"].items()})


def run_here(folder):
    """The child's side of probe()."""
    import onnxruntime as ort

    folder = Path(folder)
    with np.load(folder / _FEEDS, allow_pickle=False) as data:
        feeds = {name: data[name] for name in data.files}
    shapes = ", ".join(f"{k} {'x'.join(map(str, v.shape)) or 'scalar'}" for k, v in feeds.items())
    step(f"running the model on inputs {shapes}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(folder / _MODEL), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
    finite = all(np.isfinite(o).all() for o in outputs if np.issubdtype(np.asarray(o).dtype, np.floating))
    (folder / _RESULT).write_text(json.dumps({"finite": bool(finite),
                                              "shapes": {n: list(np.shape(o)) for n, o in zip(names, outputs)}}))


def accepted_inputs(model, rng, what, batch=2):
    """Generated inputs the dense model runs on with finite outputs: symbolic sizes besides the batch are
    searched upward through SIZES. Raises a one-line ModelError when none works."""
    sizes = SIZES if has_free_sizes(model) else (None,)
    # an export that declares a symbolic batch but fixed it to 1 inside (a traced view) runs on one row only
    batches = (batch, 1) if batch != 1 and has_symbolic_batch(model) else (batch,)
    errors = []
    for rows in batches:
        for size in sizes:
            feeds = random_inputs(model, rng, batch=rows, size=size or 2)
            result = probe(model.proto, feeds, what)
            if result.ran:
                check_finite(result, what, "generated inputs")
                return feeds
            errors.append(result.error)
    tried = f" with symbolic sizes {SIZES[0]}..{SIZES[-1]}" if sizes[0] is not None else ""
    raise ModelError(f"{errors[-1]} (on generated inputs{tried}; pass real inputs with --data FILE, "
                     "or the sizes with --input-shape NAME:DIMS)")


def check_finite(result, what, source):
    if result.finite:
        return
    advice = ("pass real inputs with --data FILE (an .npz with one array per input)" if source == "generated inputs"
              else "check the data's preprocessing")
    raise DataError(f"{what}: the dense model's own outputs are not finite on {source}: {advice}")


def certified_inputs(model, arrays, source, rng, what, rows=4):
    """The inputs verify compares on: the first rows of `arrays` (input name -> array, read from `source`)
    when given, after checking that the dense model runs on them with finite outputs; else generated ones it
    accepts (accepted_inputs)."""
    if arrays is None:
        return accepted_inputs(model, rng, what)
    data = source
    first = {name: arrays[name] for name in model.input_names}
    whole = graph.whole_inputs(model.proto)  # fed whole to every run (a scalar, a state 2 x batch x 128)
    batch = [(model.shapes.get(n) or (None,))[0] for n in model.input_names if n not in whole]
    take = batch[0] if batch and isinstance(batch[0], int) else min(rows, graph.row_count(first, whole))
    feeds = {name: np.ascontiguousarray(array) for name, array in graph.take_rows(first, slice(0, take), whole).items()}
    result = probe(model.proto, feeds, what)
    if not result.ran and take > 1:  # a batch fixed to 1 inside, or a whole input (a state) of batch 1
        single = {name: np.ascontiguousarray(array) for name, array in graph.take_rows(first, slice(0, 1), whole).items()}
        result_one = probe(model.proto, single, what)
        if result_one.ran:
            feeds, result, take = single, result_one, 1
    if not result.ran:
        raise ModelError(f"{result.error} (on the first {take} rows of {data})")
    check_finite(result, what, f"the first {take} rows of {data}")
    return feeds
