"""What `--device cuda` needs, checked before anything runs: the first missing piece in one line."""
import ctypes
import glob
import importlib.metadata
import os

from ..errors import OptionError

# the CUDA 11.8 / cuDNN 8 libraries onnxruntime-training 1.19.2's CUDA provider and cupy-cuda11x open
CUDA_LIBRARIES = ("libcudart.so.11.0", "libcublas.so.11", "libcublasLt.so.11", "libcufft.so.10", "libcurand.so.10",
                  "libcudnn.so.8")
ORT_DISTRIBUTIONS = ("onnxruntime-training-cpu", "onnxruntime-training", "onnxruntime", "onnxruntime-gpu")
# the extra cannot take the base dependency onnxruntime-training-cpu out; both write the onnxruntime folder
GPU_REPAIR = ("pip uninstall -y onnxruntime-training-cpu && pip install --force-reinstall --no-deps "
              "onnxruntime-training==1.19.2")
GPU_EXTRA = f"pip install -e '.[gpu]' && {GPU_REPAIR} (README, Install)"


def check_cuda():
    """Raise OptionError naming what is missing for training on a GPU; returns the device count."""
    import onnxruntime as ort

    installed = _installed_ort()
    if len(installed) > 1:  # the one `onnxruntime` folder holds whichever was installed last, or a mix
        raise OptionError(f"--device cuda: {' and '.join(installed)} are both installed and share the onnxruntime "
                          f"module: {GPU_REPAIR}")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        build = ", ".join(installed) or "unknown distribution"
        raise OptionError(f"--device cuda: this onnxruntime build ({build}) has no CUDA provider; for the CUDA "
                          f"build: {GPU_EXTRA}")
    try:
        import cupy
    except ImportError:
        raise OptionError(f"--device cuda: cupy is not installed (the gpu extra installs cupy-cuda11x): "
                          f"{GPU_EXTRA}") from None
    for name in CUDA_LIBRARIES:
        if not _load(name):
            raise OptionError(f"--device cuda: {name} cannot be loaded (CUDA 11.8 / cuDNN 8 runtime; the gpu "
                              f"extra installs the nvidia-*-cu11 wheels that hold it)")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, driver too old, no device
        raise OptionError(f"--device cuda: no usable GPU ({str(exc).splitlines()[0][:160]})") from None
    if count < 1:
        raise OptionError("--device cuda: no GPU visible (CUDA_VISIBLE_DEVICES?)")
    return count


def _installed_ort():
    """The onnxruntime distributions installed, with their versions."""
    found = []
    for dist in ORT_DISTRIBUTIONS:
        try:
            found.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _load(name):
    """Load a shared library from the system path or from the nvidia-* wheels (site-packages/nvidia/*/lib),
    globally, so that onnxruntime's own dlopen of the same name finds it loaded."""
    candidates = [name]
    try:
        import nvidia
        for folder in nvidia.__path__:
            candidates += sorted(glob.glob(os.path.join(folder, "*", "lib", name)))
    except ImportError:
        pass
    for candidate in candidates:
        try:
            ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
            return True
        except OSError:
            continue
    return False
