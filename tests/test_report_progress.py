"""What `onnxoto prune` shows while it runs (bars with rate and ETA on a terminal, one line per epoch in a log,
nothing with --quiet), the provenance it writes into the model, and `--device cuda` without a GPU."""
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import numpy as np
import onnx
import pytest

from onnxoto.prune.provenance import read as read_provenance

ROOT = os.path.join(os.path.dirname(__file__), "..")
DATA = os.path.join(ROOT, "onnxoto", "data")
ONNXOTO = [sys.executable, "-m", "onnxoto"]
EPOCHS = 2


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """192 training and 64 test images of the bundled Fashion-MNIST data."""
    folder = tmp_path_factory.mktemp("fmnist")
    for name, n in (("train.npz", 192), ("test.npz", 64)):
        with np.load(os.path.join(DATA, f"fmnist_{name}"), allow_pickle=False) as d:
            np.savez(folder / name, x=d["x"][:n], labels=d["labels"][:n])
    return folder


def prune_args(data, output, *extra):
    return [*ONNXOTO, "prune", os.path.join(DATA, "fmnist_resnet.onnx"), "--data", str(data / "train.npz"),
            "--val", str(data / "test.npz"), "-o", str(output), "--epochs", str(EPOCHS), "--batch-size", "32",
            "--round-to", "4", *extra]


def run_on_terminal(args, columns=100):
    """Run with stderr on a pseudo-terminal of `columns` columns; returns (exit code, stderr as text)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return process.wait(), b"".join(chunks).decode("utf-8", "replace")


def test_terminal_shows_bars_with_rate_and_eta_and_the_model_carries_its_provenance(small_data, tmp_path):
    out = tmp_path / "small.onnx"
    code, shown = run_on_terminal(prune_args(small_data, out))
    assert code == 0, shown[-2000:]
    # tqdm's bar: "epoch 1/2:  50%|...| 3/6 [00:01<00:01,  2.50step/s, loss ...]": done/total, elapsed<ETA, rate
    assert re.search(r"epoch 1/2: +\d+%\|.*\| \d+/6 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+s?(step/s|/step)", shown), shown
    for step in ("recalibrate BatchNorm", "verify the cut", "small.onnx batch 1"):
        assert step in shown
    for epoch in range(1, EPOCHS + 1):
        assert f"epoch {epoch}/{EPOCHS}: loss" in shown  # the per-epoch lines stay on a terminal too

    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    stamp = read_provenance(model)
    from onnxoto import __version__
    assert stamp["version"] == __version__ and stamp["source"] == "fmnist_resnet.onnx"
    assert stamp["settings"]["epochs"] == EPOCHS and stamp["settings"]["round_to"] == 4
    assert float(stamp["max_rel_diff"]) <= 1e-4
    from onnxoto import graph, groups
    written = sorted(g.num_zigs for g in groups.analyze(graph.load(str(out))).prunable)
    assert sorted(kept for kept, _ in stamp["kept_widths"].values()) == written
    assert all(0 < kept <= channels for kept, channels in stamp["kept_widths"].values())


def test_a_log_gets_one_line_per_epoch_and_quiet_gets_none(small_data, tmp_path):
    logged = subprocess.run(prune_args(small_data, tmp_path / "a.onnx"), capture_output=True, text=True)
    assert logged.returncode == 0, logged.stderr
    assert "\r" not in logged.stderr
    assert [line.split(":")[0] for line in logged.stderr.splitlines()] == [f"epoch {e}/{EPOCHS}"
                                                                           for e in range(1, EPOCHS + 1)]
    quiet = subprocess.run(prune_args(small_data, tmp_path / "b.onnx", "--quiet"), capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert "verified" in quiet.stdout  # the result still prints


def test_quiet_terminal_shows_no_bars(small_data, tmp_path):
    code, shown = run_on_terminal([*ONNXOTO, "verify", os.path.join(DATA, "fmnist_resnet.onnx"), "-q"])
    assert code == 0 and shown == ""
    # verify's certificate runs in a child process (a crash there is one line); its bar is drawn here
    code, shown = run_on_terminal([*ONNXOTO, "verify", os.path.join(DATA, "fmnist_resnet.onnx")])
    assert code == 0 and re.search(r"certify groups: +\d+%\|", shown), shown


def test_cuda_without_a_usable_gpu_is_one_line_naming_what_is_missing(small_data, tmp_path):
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has the CUDA provider")
    result = subprocess.run(prune_args(small_data, tmp_path / "c.onnx", "--device", "cuda"), capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "no CUDA provider" in result.stderr and "onnxruntime-training-cpu" in result.stderr
    assert not (tmp_path / "c.onnx").exists()


def test_profile_shows_a_bar_over_its_groups(tmp_path):
    table = tmp_path / "table.json"
    code, shown = run_on_terminal([*ONNXOTO, "profile", os.path.join(DATA, "fmnist_resnet.onnx"), "-o", str(table),
                                   "--batch", "2", "--rounds", "2"])
    assert code == 0, shown[-2000:]
    assert re.search(r"profile group 1/\d+: +\d+%\|", shown), shown
    assert table.exists()
