"""Entry point of the process that builds training artifacts: `python -m onnxoto.train._child DIRECTORY`."""
import sys

from .artifacts import generate_here

if __name__ == "__main__":
    generate_here(sys.argv[1])
