"""`python -m onnxoto`: the same as the `onnxoto` command."""
from .cli import main

main()
