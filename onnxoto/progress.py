"""Progress bars with rate and ETA (tqdm) for the long steps, on a terminal only: a log or a pipe gets the
commands' own lines (one per epoch), and `--quiet` turns both off.

A child process (onnxoto.child) has no terminal: when its parent shows bars, the child's bars are drawn
as lines `RELAY + text` on its stderr, and the parent puts each on its own terminal (`Relayed`)."""
import os
import sys

from tqdm import tqdm

RELAY = "onnxoto-bar: "
RELAY_COLUMNS = "ONNXOTO_BAR_COLUMNS"  # set for a child by a parent that shows bars: their width
_quiet = False


def set_quiet(quiet):
    """No progress bars (the CLI's --quiet); the commands also drop their per-epoch lines then."""
    global _quiet
    _quiet = bool(quiet)


def is_quiet():
    return _quiet


def bar(iterable=None, total=None, desc="", unit="step", hidden=False):
    """A tqdm bar on stderr that clears itself when done; disabled off a terminal, when quiet, or hidden
    (the other ranks of a distributed run)."""
    relayed = os.environ.get(RELAY_COLUMNS)
    if relayed and not (hidden or _quiet):
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, file=_RelayStream(), ncols=int(relayed),
                    smoothing=0.1, mininterval=0.2)
    shown = bars_shown(hidden)
    sized = shown and _columns(sys.stderr) > 0  # tqdm draws nothing on a terminal of size 0 (a fresh pty)
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, disable=not shown,
                dynamic_ncols=sized, ncols=None if sized else 100, nrows=None if sized else 24, smoothing=0.1)


def bars_shown(hidden=False):
    """Whether bars are drawn here: on a terminal, not quiet, not hidden."""
    return not (hidden or _quiet) and sys.stderr.isatty()


def relay_environment():
    """Environment entries that make a child process relay its bars here ({} when no bars are shown)."""
    return {RELAY_COLUMNS: str(_columns(sys.stderr) or 100)} if bars_shown() else {}


class _RelayStream:
    """tqdm's output in a child: each redraw ("\r" + text) becomes one relayed line; a clear, an empty one."""

    def write(self, text):
        line = text.replace("\r", "").replace("\n", "")
        if text:
            print(RELAY + line.rstrip(), file=sys.stderr, flush=True)

    def flush(self):
        pass


class Relayed:
    """Draws a child's relayed bar lines on this process's terminal, each over the last."""

    def __init__(self):
        self.width = 0

    def draw(self, line):
        if os.environ.get(RELAY_COLUMNS):  # a child of a child: pass it up
            print(RELAY + line, file=sys.stderr, flush=True)
            return
        sys.stderr.write("\r" + line.ljust(self.width) + ("\r" if not line else ""))
        sys.stderr.flush()
        self.width = len(line)

    def close(self):
        if self.width:
            self.draw("")


def _columns(stream):
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        return 0
