"""The sparse optimizers of the Only-Train-Once line on arrays and group index arrays (numpy or CuPy).

No ONNX, no onnxruntime here: parameters and gradients arrive as arrays that alias the training
engine's buffers, and every update happens in place.
"""
from .base import SGD, AdamW
from .cric import HessoCric
from .dhspg import Dhspg
from .groups import ZigGroup, ZigSlice
from .hesso import DEFAULT_SALIENCY_SCOPE, SCOPES, Hesso
from .schedule import Schedule, default_schedule

__all__ = ["DEFAULT_SALIENCY_SCOPE", "SCOPES", "SGD", "AdamW", "Hesso", "HessoCric", "Dhspg", "ZigGroup", "ZigSlice",
           "Schedule", "default_schedule"]
