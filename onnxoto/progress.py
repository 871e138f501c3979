"""Progress bars with rate and ETA (tqdm) for the long steps, on a terminal only: a log or a pipe gets the
commands' own lines (one per epoch), and `--quiet` turns both off."""
import os
import sys

from tqdm import tqdm

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
    shown = not (hidden or _quiet) and sys.stderr.isatty()
    sized = shown and _columns(sys.stderr) > 0  # tqdm draws nothing on a terminal of size 0 (a fresh pty)
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, disable=not shown,
                dynamic_ncols=sized, ncols=None if sized else 100, nrows=None if sized else 24, smoothing=0.1)


def _columns(stream):
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        return 0
