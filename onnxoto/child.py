"""onnxruntime work that can kill the process, run in a child process.

onnxruntime's kernels and its gradient builder have died of SIGFPE and SIGABRT on real models (an
integer division by a size that came out zero, an assertion). In a child process such a death becomes
one ModelError that names the command, the model, the signal and the step it was taking.

The child runs `function(directory)`: it reads its inputs from the directory and writes its results
there. It announces what it is doing with `step(...)` (a line on stderr), so that a crash can say where.

    python -m onnxoto.child onnxoto.module:function DIRECTORY
"""
import importlib
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from . import errors, progress
from .errors import ModelError, OnnxotoError

_STEP, _ERROR = "onnxoto-step: ", "onnxoto-error: "
# "RuntimeError: /onnxruntime_src/...cc:29 ns::Type ns::Function(args...) " before onnxruntime's message
_CXX_LOCATION = re.compile(r"/\S+\.(?:cc|h|cpp):\d+ [^(]*\((?:[^()]|\([^()]*\))*\)\s*(?:const\s*)?")


class ChildCrashed(ModelError):
    """The child process died of a signal (or ran over its time)."""

    def __init__(self, message, signal_name):
        super().__init__(message)
        self.signal_name = signal_name


def run_child(function, directory, what, timeout=None):
    """Run `function` ("package.module:name") on `directory` in a child process.

    `what` starts every message: "verify: model.onnx". An OnnxotoError in the child is raised here with
    its class and message; any other error becomes a ModelError with the child's last line; a death by a
    signal is a ChildCrashed naming the signal and the child's last step."""
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
               ONNXOTO_CHILD="1", **progress.relay_environment())
    args = [sys.executable, "-m", "onnxoto.child", function, str(Path(directory).resolve())]
    returncode, stderr, timed_out = _run_relaying_bars(args, directory, env, timeout)
    if timed_out:
        raise ChildCrashed(f"{what}: onnxruntime ran over {timeout:g} s{_last_step(stderr)}", "timeout")
    if returncode == 0:
        return
    if returncode < 0:
        name = _signal_name(-returncode)
        raise ChildCrashed(f"{what}: onnxruntime crashed ({name}){_last_step(stderr)}", name)
    kind, message = _last_error(stderr)
    error_class = getattr(errors, kind, None)
    if isinstance(error_class, type) and issubclass(error_class, OnnxotoError):
        raise error_class(message)
    raise ModelError(f"{what}: {kind + ': ' if kind else ''}{message or f'exited with code {returncode}'}")


def _run_relaying_bars(args, directory, env, timeout):
    """Run the child; its relayed progress bars are drawn here, its other stderr lines kept.
    Returns (exit code, the kept stderr, whether it was killed for running over `timeout` s)."""
    process = subprocess.Popen(args, cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, errors="replace")
    expired = threading.Event()
    timer = threading.Timer(timeout, lambda: (expired.set(), process.kill())) if timeout else None
    if timer:
        timer.start()
    kept, bars = [], progress.Relayed()
    try:
        for line in process.stderr:
            if line.startswith(progress.RELAY):
                bars.draw(line[len(progress.RELAY):].rstrip("\n"))
            else:
                kept.append(line)
        process.wait()
    finally:
        bars.close()
        if timer:
            timer.cancel()
    return process.returncode, "".join(kept), expired.is_set()


def step(text):
    """Say, in a child, what it does now (shown if it crashes); in the parent process, nothing."""
    if os.environ.get("ONNXOTO_CHILD"):
        print(_STEP + text, file=sys.stderr, flush=True)


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_step(stderr):
    steps = [line[len(_STEP):] for line in (stderr or "").splitlines() if line.startswith(_STEP)]
    return f" while {steps[-1]}" if steps else ""


def _last_error(stderr):
    """(exception class name, one-line message) the child wrote last; else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith(_STEP)]
    marked = [line[len(_ERROR):] for line in lines if line.startswith(_ERROR)]
    if marked:
        kind, _, message = marked[-1].partition(": ")
    else:
        kind, message = "", lines[-1] if lines else ""
    message = _CXX_LOCATION.sub("", message)
    return kind, message if len(message) <= 400 else message[:400] + " ..."


def _main(function, directory):
    module, _, name = function.partition(":")
    try:
        getattr(importlib.import_module(module), name)(directory)
    except Exception as error:  # anything: one line for the parent
        message = " ".join(str(error).split())
        print(f"{_ERROR}{type(error).__name__}: {message}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
