"""Check exported models with onnx and onnxruntime (run in /work/venv: no torch needed).

    python tools/check_models.py zoo [STEM ...]        # models/<stem>.onnx against torch references
    python tools/check_models.py fmnist DATA_DIR [FULL_X.npy FULL_Y.npy]
    python tools/check_models.py train [STEM ...]      # can onnxruntime-training train the file as is?

zoo: onnx.checker (full), strict shape inference, IR <= 10 and opset <= 21, onnxruntime
CPU outputs within 1e-4 (relative to the output's scale) of the torch outputs saved by
tools/make_models.py, and a run at another batch size.
fmnist: accuracy of onnxoto/data/fmnist_resnet.onnx on the bundled and full test sets,
and a few onnxruntime-training steps on it (artifacts built without torch).
train: for each zoo file, build artifacts straight from the exported graph (no rewriting)
and take two AdamW steps, each in its own process (the builder can die of SIGFPE).
"""
import glob
import os
import subprocess
import sys
import tempfile
import types

import numpy as np
import onnx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "models")
REF_DIR = os.environ.get("ONNXOTO_ZOO_REF", "/tmp/onnxoto_zoo_ref")
MAX_OPSET, MAX_IR = 21, 10


def import_ort():
    import onnxruntime
    return onnxruntime


def import_training_api():
    # onnxruntime/training/__init__.py imports torch; the submodules used here don't.
    ort = import_ort()
    pkg = types.ModuleType("onnxruntime.training")
    pkg.__path__ = [os.path.join(os.path.dirname(ort.__file__), "training")]
    sys.modules.setdefault("onnxruntime.training", pkg)
    from onnxruntime.training import artifacts
    from onnxruntime.training.api import CheckpointState, Module, Optimizer
    return artifacts, CheckpointState, Module, Optimizer


def check_onnx(path):
    """Checker, shape inference, version limits; returns the op-type histogram."""
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    opset = max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    assert m.ir_version <= MAX_IR, f"{path}: IR {m.ir_version} > {MAX_IR}"
    assert opset <= MAX_OPSET, f"{path}: opset {opset} > {MAX_OPSET}"
    assert [i.name for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}] == ["x"]
    assert m.graph.output[0].name == "y", [o.name for o in m.graph.output]
    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return m, opset, ops


def check_zoo(stems):
    ort = import_ort()
    # Without arguments: every model that tools/make_models.py left a torch reference for.
    stems = stems or sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(REF_DIR, "*.npz")))
    bad = []
    for stem in stems:
        path = os.path.join(MODELS, stem + ".onnx")
        try:
            m, opset, ops = check_onnx(path)
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            ref = np.load(os.path.join(REF_DIR, stem + ".npz"))
            y = sess.run(None, {"x": ref["x"]})[0]
            scale = max(1.0, float(np.abs(ref["y"]).max()))
            err = float(np.abs(y - ref["y"]).max()) / scale
            assert y.shape == ref["y"].shape and err <= 1e-4, f"max rel diff {err:.2e}"
            x5 = np.concatenate([ref["x"], ref["x"][:2]])  # another batch size: the batch dim is dynamic
            y5 = sess.run(None, {"x": x5})[0]
            assert y5.shape[0] == 5 and np.allclose(y5[:3], y, atol=1e-5 * scale)
            if ref["x"].ndim == 2 and m.graph.input[0].type.tensor_type.shape.dim[1].dim_param:
                y10 = sess.run(None, {"x": ref["x"][:, :10]})[0]  # a dynamic sequence length must run
                assert y10.shape == y.shape
            size = os.path.getsize(path) / 1024
            print(f"ok   {stem:28s} ir {m.ir_version} opset {opset:2d} {size:5.0f} KiB  diff {err:.1e}  "
                  f"nodes {len(m.graph.node):3d}  BN {ops.get('BatchNormalization', 0):2d}  "
                  f"Identity {ops.get('Identity', 0):2d}  Constant {ops.get('Constant', 0):3d}")
        except Exception as e:
            bad.append(stem)
            print(f"FAIL {stem}: {type(e).__name__}: {e}")
    if bad:
        sys.exit(f"{len(bad)} model(s) failed: {', '.join(bad)}")


def accuracy(sess, x, labels):
    pred = np.concatenate([sess.run(None, {"x": x[i:i + 1000]})[0].argmax(1) for i in range(0, len(x), 1000)])
    return float((pred == labels).mean())


def check_fmnist(data_dir, full_x=None, full_y=None):
    ort = import_ort()
    path = os.path.join(data_dir, "fmnist_resnet.onnx")
    m, opset, ops = check_onnx(path)
    assert ops.get("BatchNormalization", 0) > 0, "BatchNorm was folded"
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    test = np.load(os.path.join(data_dir, "fmnist_test.npz"))
    train = np.load(os.path.join(data_dir, "fmnist_train.npz"))
    print(f"input dtype {test['x'].dtype} {test['x'].shape}; train {train['x'].shape}, "
          f"classes {np.bincount(train['labels'])}")
    print(f"onnxruntime accuracy, bundled test subset ({len(test['x'])}): {accuracy(sess, test['x'], test['labels']):.4f}")
    print(f"onnxruntime accuracy, bundled train subset ({len(train['x'])}): "
          f"{accuracy(sess, train['x'], train['labels']):.4f}")
    if full_x:
        print(f"onnxruntime accuracy, full test set (10000): {accuracy(sess, np.load(full_x), np.load(full_y)):.4f}")
    train_steps(m, train["x"][:64], train["labels"][:64])


def trainable_names(model):
    """Float weight initializers: everything float and non-scalar except BN running statistics."""
    running = {n.input[i] for n in model.graph.node if n.op_type == "BatchNormalization" for i in (3, 4)}
    return [t.name for t in model.graph.initializer
            if t.data_type == onnx.TensorProto.FLOAT and t.name not in running and len(t.dims) > 0]


def train_steps(model, x, target, steps=3, loss="CrossEntropyLoss"):
    """Build training artifacts for the float weights (not BN running stats) and take a few AdamW steps."""
    artifacts, CheckpointState, Module, Optimizer = import_training_api()
    params = trainable_names(model)
    frozen = [t.name for t in model.graph.initializer if t.name not in params]
    work = tempfile.mkdtemp()
    artifacts.generate_artifacts(model, requires_grad=params, frozen_params=frozen,
                                 loss=getattr(artifacts.LossType, loss),
                                 optimizer=artifacts.OptimType.AdamW, artifact_directory=work)
    state = CheckpointState.load_checkpoint(os.path.join(work, "checkpoint"))
    module = Module(os.path.join(work, "training_model.onnx"), state, os.path.join(work, "eval_model.onnx"))
    opt = Optimizer(os.path.join(work, "optimizer_model.onnx"), module)
    opt.set_learning_rate(1e-3)
    module.train()
    losses = []
    for _ in range(steps):
        losses.append(float(module(x, target)))
        opt.step()
        module.lazy_reset_grad()
    print(f"onnxruntime-training: {len(params)} trainable tensors, losses "
          + " ".join(f"{v:.4f}" for v in losses), flush=True)


def train_one(stem):
    """Child process: train models/<stem>.onnx on its reference input (MSE for image outputs)."""
    model = onnx.load(os.path.join(MODELS, stem + ".onnx"))
    ref = np.load(os.path.join(REF_DIR, stem + ".npz"))
    if ref["y"].ndim == 2:
        train_steps(model, ref["x"], np.arange(len(ref["x"]), dtype=np.int64) % ref["y"].shape[1], steps=2)
    else:
        train_steps(model, ref["x"], ref["y"].astype(np.float32), steps=2, loss="MSELoss")


def check_training(stems):
    stems = stems or sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(REF_DIR, "*.npz")))
    for stem in stems:
        r = subprocess.run([sys.executable, __file__, "train-one", stem], capture_output=True, text=True)
        out = [ln for ln in (r.stdout + r.stderr).splitlines() if "[I:onnxruntime" not in ln and ln.strip()]
        if r.returncode == 0:
            print(f"trains  {stem:28s} {out[-1]}")
        elif r.returncode < 0:
            print(f"CRASH   {stem:28s} killed by signal {-r.returncode}")
        else:
            error = next((ln for ln in reversed(out) if "Error" in ln), out[-1] if out else "")
            print(f"FAILS   {stem:28s} {error[-220:]}")


def main():
    commands = {"zoo": check_zoo, "train": check_training,
                "train-one": lambda args: train_one(*args), "fmnist": lambda args: check_fmnist(*args)}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
