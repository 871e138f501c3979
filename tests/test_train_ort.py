"""The training API imports and trains where torch cannot be imported."""
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
sys.path[:0] = [{root!r}, {tests!r}]
import numpy as np
from onnxoto.train import TrainingSession
from onnxoto.train import ort
from train_models import mlp
ort.Module, ort.CheckpointState, ort.artifacts, ort.onnxblock
with TrainingSession(mlp(), "mse") as session:
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    loss = session.train_step({{"x": x}}, np.zeros((8, 2), np.float32))
assert np.isfinite(loss) and "torch" not in [m for m, v in sys.modules.items() if v is not None]
print("trained without torch", loss)
"""


def test_training_api_works_without_torch():
    root = Path(__file__).resolve().parents[1]
    script = SCRIPT.format(root=str(root), tests=str(root / "tests"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained without torch" in done.stdout
