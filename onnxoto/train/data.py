"""Training data: .npz files, folders of .npy files (memory-mapped), or Python iterables of batches,
checked against the model's inputs before training starts."""
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from ..errors import DataError
from ..graph import batch_symbols, dims, fed_whole, static_dims

LABELS = "labels"
_CHUNK = 1 << 16  # samples per chunk when scanning (memory-mapped) arrays for NaN/inf


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None  # None: a free (symbolic or unknown) dim; None overall: unknown rank


def model_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    initializers = {init.name for init in model.graph.initializer}
    return [InputSpec(v.name, _dtype(v), static_dims(v)) for v in model.graph.input if v.name not in initializers]


def _dtype(value: onnx.ValueInfoProto) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))


class Dataset:
    """Arrays with one sample per row (axis 0), one per model input, and optional labels; `constants`: the
    arrays of inputs fed whole, the same array in every batch (graph.fed_whole: a scalar, a state `2 x 1 x 128`)."""

    def __init__(self, arrays: dict[str, np.ndarray], labels: np.ndarray | None = None, source: str = "data",
                 constants: dict[str, np.ndarray] | None = None):
        self.arrays, self.labels, self.source = arrays, labels, source
        self.constants = dict(constants or {})

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 1  # only constants: one sample

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def batches(self, batch_size: int, shuffle: bool = False,
                rng: np.random.Generator | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Dicts of input name -> array (plus "labels"), `batch_size` samples each (the last may be short)."""
        n = len(self)
        order = (rng or np.random.default_rng()).permutation(n) if shuffle else None
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size) if order is None else np.sort(order[start:start + batch_size])
            batch = {name: np.ascontiguousarray(array[rows]) for name, array in self.arrays.items()}
            batch.update(self.constants)
            if self.labels is not None:
                batch[LABELS] = np.ascontiguousarray(self.labels[rows])
            yield batch


def load_data(source, model: onnx.ModelProto, label_output: str | None = None) -> Dataset:
    """A checked Dataset from a .npz path, a folder of .npy files, or an iterable of batches."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        arrays = _read_folder(path) if path.is_dir() else _read_npz(path)
        name = path.name
    else:
        arrays, name = _collect_batches(source, model_inputs(model)), "batches"
    return check_dataset(arrays, model, name, label_output)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path.name}: not an .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise DataError(f"{path.name}: holds a pickled object array; only plain numeric arrays are read") from None
        raise DataError(f"{path.name}: {error}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataError(f"{path.name}: unreadable .npz ({error})") from None


def _read_folder(path: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for file in sorted(path.glob("*.npy")):
        try:
            arrays[file.stem] = np.load(file, mmap_mode="r", allow_pickle=False)
        except ValueError as error:
            if "allow_pickle" in str(error) or "object" in str(error).lower():
                raise DataError(f"{file.name}: holds a pickled object array; only plain numeric arrays are read") from None
            raise DataError(f"{file.name}: {error}") from None
    if not arrays:
        raise DataError(f"{path}: no .npy files in this folder")
    return arrays


def _collect_batches(batches: Iterable, inputs: list[InputSpec]) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    names = [spec.name for spec in inputs]
    for batch in batches:
        if isinstance(batch, dict):
            items = batch.items()
        elif isinstance(batch, (tuple, list)) and len(batch) in (len(names), len(names) + 1):
            items = zip([*names, LABELS], batch)
        else:
            raise DataError(f"a batch must be a dict or a tuple of {len(names)} input arrays (+ labels)")
        for name, array in items:
            parts.setdefault(name, []).append(np.asarray(array))
    if not parts:
        raise DataError("the batches are empty")
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def check_dataset(arrays: dict[str, np.ndarray], model: onnx.ModelProto, source: str = "data",
                  label_output: str | None = None) -> Dataset:
    """Every check that can fail before training: each failure is a one-line DataError."""
    inputs = model_inputs(model)
    if any(spec.name == LABELS for spec in inputs):
        raise DataError(f"model input named {LABELS!r} clashes with the labels array of {source}")
    if len(inputs) == 1 and inputs[0].name not in arrays and "x" in arrays:
        arrays = {inputs[0].name: arrays["x"], **{k: v for k, v in arrays.items() if k != "x"}}
    for array_name, array in arrays.items():
        if array.dtype == object:
            raise DataError(f"{source}: array {array_name!r} holds Python objects; only numeric arrays are read")
    checked = {spec.name: _checked_input(arrays, spec, source) for spec in inputs}
    whole = {spec.name for spec in inputs if fed_whole(spec.shape)}
    features = {name: array for name, array in checked.items() if name not in whole}
    constants = {name: array for name, array in checked.items() if name in whole}
    _check_batch_axes(model, constants, source)
    labels = arrays.get(LABELS)
    counts = {name: len(a) for name, a in features.items()} | ({LABELS: len(labels)} if labels is not None else {})
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name}: {count}" for name, count in counts.items())
        raise DataError(f"{source}: arrays have differing sample counts ({listed})")
    if labels is not None:
        labels = _checked_labels(labels, model, label_output, source)
    if (counts and min(counts.values()) == 0) or (not counts and not constants):
        raise DataError(f"{source}: no samples")
    return Dataset(features, labels, source, constants)


def _checked_input(arrays: dict[str, np.ndarray], spec: InputSpec, source: str) -> np.ndarray:
    if spec.name not in arrays:
        hint = " (or 'x')" if len(arrays) and spec.name != "x" else ""
        raise DataError(f"{source}: no array for model input {spec.name!r}{hint}; has {', '.join(arrays) or 'none'}")
    array = arrays[spec.name]
    if fed_whole(spec.shape):  # a scalar or a fixed first axis: the array is fed whole, as the model declares it
        if array.ndim != len(spec.shape) or any(w is not None and w != g for w, g in zip(spec.shape, array.shape)):
            kind = "a scalar" if spec.shape == () else f"of fixed shape {_show(spec.shape)}"
            raise DataError(f"{source}: {spec.name!r} has shape {array.shape}, but the model input is {kind}: such an "
                            "input is fed whole to every run (the same array), so the array must have that shape")
    elif array.ndim == 0:  # rows are samples: a 0-d array has none
        raise DataError(f"{source}: {spec.name!r} is a scalar but the model input {_show(spec.shape or ())} takes "
                        "one row per sample on axis 0")
    if spec.shape is not None and not fed_whole(spec.shape):
        if array.ndim != len(spec.shape):
            raise DataError(f"{source}: {spec.name!r} has shape {array.shape}, the model input rank {len(spec.shape)}"
                            f" ({_show(spec.shape)})")
        if any(want is not None and want != got for want, got in zip(spec.shape[1:], array.shape[1:])):
            raise DataError(f"{source}: {spec.name!r} has shape {array.shape}, the model input {_show(spec.shape)}")
    array = _checked_dtype(array, spec, source)
    if np.issubdtype(array.dtype, np.floating):
        _check_finite(array, spec.name, source)
    return array


def _check_batch_axes(model: onnx.ModelProto, constants: dict[str, np.ndarray], source: str) -> None:
    """A whole input whose declared dims name the batch (a state `2 x batch x 128`) is the same for every row:
    it must have size 1 there, since a run of another number of rows (the last batch, one row) would not fit."""
    symbols = batch_symbols(model)
    for value in model.graph.input:
        if value.name not in constants:
            continue
        for axis, dim in enumerate(dims(value) or ()):
            if dim in symbols and constants[value.name].shape[axis] != 1:
                raise DataError(f"{source}: {value.name!r} is fed whole to every run and its axis {axis} is the batch "
                                f"({dim!r}, axis 0 of the inputs that take rows): give it size 1 there (one state "
                                f"for every row), not {constants[value.name].shape[axis]}")


def _checked_dtype(array: np.ndarray, spec: InputSpec, source: str) -> np.ndarray:
    have, want = array.dtype, spec.dtype
    if have == want:
        return array
    if np.issubdtype(want, np.floating) and np.issubdtype(have, np.integer):
        raise DataError(f"{source}: {spec.name!r} is {have} but the model input is {want}; scale it into the "
                        f"range the model was trained on and save it as {want} (onnxoto does not guess a scale)")
    same_kind = np.issubdtype(have, np.floating) == np.issubdtype(want, np.floating) and have.kind != "b"
    if not same_kind:
        raise DataError(f"{source}: {spec.name!r} is {have} but the model input is {want}")
    return array.astype(want)  # float64 -> float32, int32 -> int64: same kind, value-preserving for sane data


def _check_finite(array: np.ndarray, name: str, source: str) -> None:
    if array.ndim == 0:
        array = array.reshape(1)
    for start in range(0, len(array), _CHUNK):
        if not np.isfinite(array[start:start + _CHUNK]).all():
            raise DataError(f"{source}: {name!r} contains NaN or infinite values")


def _checked_labels(labels: np.ndarray, model: onnx.ModelProto, output: str | None, source: str) -> np.ndarray:
    """The labels as the loss takes them: int64 class indices or float targets of the output's dtype."""
    outputs = {o.name: o for o in model.graph.output}
    value = outputs.get(output) if output else model.graph.output[0]
    if value is None:
        raise DataError(f"model has no output {output!r}")
    shape = static_dims(value)
    if np.issubdtype(labels.dtype, np.integer):
        if labels.ndim != 1:
            raise DataError(f"{source}: class labels must be one integer per sample, got shape {labels.shape}")
        classes = shape[-1] if shape else None
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or (classes is not None and high >= classes):
            bound = f"[0, {classes})" if classes is not None else "non-negative"
            raise DataError(f"{source}: labels range over [{low}, {high}], outside the output's classes {bound}")
        return labels.astype(np.int64, copy=False)
    elif np.issubdtype(labels.dtype, np.floating):
        if shape is not None and (labels.ndim != len(shape) or
                                  any(w is not None and w != g for w, g in zip(shape[1:], labels.shape[1:]))):
            raise DataError(f"{source}: float labels have shape {labels.shape}, the output {_show(shape)}")
        _check_finite(labels, LABELS, source)
        return labels.astype(_dtype(value), copy=False)
    else:
        raise DataError(f"{source}: labels of type {labels.dtype} are neither class indices nor float targets")


def _show(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
