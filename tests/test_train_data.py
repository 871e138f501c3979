"""Data loading and the checks that fail before training starts, each a one-line DataError."""
import numpy as np
import pytest
from train_models import conv_bn_net, two_output_net

from onnxoto.errors import DataError
from onnxoto.train.data import load_data

RNG = np.random.default_rng(0)


def images(n=10):
    return RNG.standard_normal((n, 1, 6, 6)).astype(np.float32)


def test_npz_with_the_x_alias_and_labels(tmp_path):
    np.savez(tmp_path / "d.npz", x=images(10), labels=np.arange(10) % 4)
    data = load_data(tmp_path / "d.npz", conv_bn_net())
    assert len(data) == 10 and data.has_labels
    batches = list(data.batches(4, shuffle=True, rng=np.random.default_rng(1)))
    assert [len(b["x"]) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate([b["labels"] for b in batches]).tolist()) == sorted((np.arange(10) % 4).tolist())
    assert batches[0]["labels"].dtype == np.int64


def test_folder_of_npy_files_is_memory_mapped(tmp_path):
    np.save(tmp_path / "x.npy", images(6))
    data = load_data(tmp_path, conv_bn_net())
    assert isinstance(data.arrays["x"], np.memmap) and not data.has_labels
    assert next(data.batches(6))["x"].shape == (6, 1, 6, 6)


def test_iterable_of_tuples_and_dicts():
    data = load_data([(images(3), np.array([0, 1, 2])), (images(2), np.array([3, 3]))], conv_bn_net())
    assert len(data) == 5 and data.has_labels
    data = load_data([{"x": RNG.standard_normal((4, 4)).astype(np.float32)}], two_output_net())
    assert len(data) == 4


@pytest.mark.parametrize("arrays, message", [
    ({"image": images()}, "no array for model input 'x'"),
    ({"x": images()[:, :, :5]}, r"has shape \(10, 1, 5, 6\), the model input \(\?, 1, 6, 6\)"),
    ({"x": images()[:, 0]}, "model input rank 4"),
    ({"x": images(), "labels": np.zeros(9, np.int64)}, r"differing sample counts \(x: 10, labels: 9\)"),
    ({"x": np.full((10, 1, 6, 6), np.nan, np.float32)}, "NaN or infinite"),
    ({"x": images(), "labels": np.full(10, 4)}, r"labels range over \[4, 4\], outside the output's classes \[0, 4\)"),
    ({"x": images(), "labels": np.full(10, -1)}, "outside the output's classes"),
    ({"x": (images() * 100).astype(np.uint8)}, "x' is uint8 but the model input is float32; scale it"),
    ({"x": images().astype(np.int64) > 0}, "is bool but the model input is float32"),
])
def test_bad_data_is_refused_in_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message) as caught:
        load_data(tmp_path / "d.npz", conv_bn_net())
    assert "\n" not in str(caught.value)


def test_float64_data_is_taken_as_the_model_float_type(tmp_path):
    np.savez(tmp_path / "d.npz", x=images().astype(np.float64))
    assert load_data(tmp_path / "d.npz", conv_bn_net()).arrays["x"].dtype == np.float32


def test_not_an_npz_file(tmp_path):
    (tmp_path / "d.npz").write_text("hello")
    with pytest.raises(DataError, match="not an .npz file"):
        load_data(tmp_path / "d.npz", conv_bn_net())


def test_pickled_object_arrays_are_never_unpickled(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}] * 10, dtype=object))
    with pytest.raises(DataError, match="pickled object array"):
        load_data(tmp_path / "d.npz", conv_bn_net())
    np.save(tmp_path / "x.npy", np.array([None] * 3, dtype=object))
    with pytest.raises(DataError, match="pickled object array"):
        load_data(tmp_path, conv_bn_net())
