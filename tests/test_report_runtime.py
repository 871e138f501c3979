"""The written model runs in the onnxruntime people deploy with: the current `onnxruntime` release from PyPI
(the plain inference package, not the training build), in a virtual environment of its own (the two builds
share the `onnxruntime` module and must never meet in one environment). Its outputs equal those of the
training build, and it reads onnxoto's provenance from the metadata. Skips when PyPI cannot be reached."""
import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest

from onnxoto.prune import prune
from onnxoto.verify import relative_difference
from onnxoto.verify.certify import TOLERANCE

ROOT = os.path.join(os.path.dirname(__file__), "..")
DATA = os.path.join(ROOT, "onnxoto", "data")
MODELS = os.path.join(ROOT, "models")

RUN = """
import json, sys
import numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
with np.load(sys.argv[2], allow_pickle=False) as feeds:
    outputs = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
np.savez(sys.argv[3], *outputs)
print(json.dumps({"version": ort.__version__, "metadata": session.get_modelmeta().custom_metadata_map}))
"""


@pytest.fixture(scope="module")
def current_onnxruntime(tmp_path_factory):
    """python of a fresh venv with the newest onnxruntime and numpy pip can get."""
    venv = tmp_path_factory.mktemp("current-onnxruntime")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--upgrade", "--timeout", "30", "--retries", "1",
                              "onnxruntime", "numpy"], capture_output=True, text=True, timeout=900)
    if install.returncode != 0:
        last = (install.stderr.strip().splitlines() or ["pip failed"])[-1]
        pytest.skip(f"the current onnxruntime could not be installed from PyPI: {last[:200]}")
    return python


def pruned_model(tmp_path, model, data, **options):
    out = tmp_path / "pruned.onnx"
    prune(model, str(data), str(out), epochs=1, batch_size=32, log=lambda line: None, **options)
    return out


def fmnist(tmp_path, n=128):
    with np.load(os.path.join(DATA, "fmnist_train.npz"), allow_pickle=False) as d:
        np.savez(tmp_path / "train.npz", x=d["x"][:n], labels=d["labels"][:n])
        return tmp_path / "train.npz", {"x": d["x"][n:n + 16]}


def unlabeled(tmp_path, shape=(64, 3, 32, 32)):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.savez(tmp_path / "train.npz", x=x)
    return tmp_path / "train.npz", {"x": x[:16]}


@pytest.mark.parametrize("model,make_data,options", [
    (os.path.join(DATA, "fmnist_resnet.onnx"), fmnist, dict(target_flops=0.5, round_to=8)),
    (os.path.join(MODELS, "forms_mobilenetv3.onnx"), unlabeled, dict(target_sparsity=0.3, base="adamw")),
], ids=["fmnist_resnet", "forms_mobilenetv3"])
def test_pruned_model_runs_in_the_current_onnxruntime_with_the_training_builds_outputs(
        current_onnxruntime, tmp_path, model, make_data, options):
    data, feeds = make_data(tmp_path)
    out = pruned_model(tmp_path, model, data, **options)
    np.savez(tmp_path / "feeds.npz", **feeds)
    ran = subprocess.run([current_onnxruntime, "-c", RUN, str(out), str(tmp_path / "feeds.npz"),
                          str(tmp_path / "outputs.npz")], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    seen = json.loads(ran.stdout.strip().splitlines()[-1])
    assert seen["version"] != onnxruntime.__version__  # a different build, not this environment's
    assert json.loads(seen["metadata"]["onnxoto.settings"])["epochs"] == 1
    print(f"onnxruntime {seen['version']} (training build {onnxruntime.__version__})")

    training = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)
    with np.load(tmp_path / "outputs.npz", allow_pickle=False) as current:
        deployed = [current[f"arr_{k}"] for k in range(len(current.files))]
    assert [o.shape for o in deployed] == [o.shape for o in training]
    assert relative_difference(training, deployed) <= TOLERANCE
