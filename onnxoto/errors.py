"""Errors a user can cause. The CLI prints their one-line message and exits with code 2."""


class OnnxotoError(Exception):
    """Base of every user-facing error: the message is one line that names the problem."""


class ModelError(OnnxotoError):
    """The model file cannot be read, is not valid ONNX, or uses something we cannot handle."""


class DataError(OnnxotoError):
    """Training or validation data does not fit the model."""


class OptionError(OnnxotoError):
    """An option or combination of options that cannot work."""
