"""Training engine: trainable parameters, training artifacts, a session with in-place views, data, BN recalibration.

Names load their module when first used: the CLI reads the light `kinds` without onnxruntime."""
from ..lazy import lazy_exports

_EXPORTS = {
    "Artifacts": "artifacts", "LossSpec": "artifacts", "build_artifacts": "artifacts", "loss_for": "artifacts",
    "check_recalibration": "bn", "recalibrate_batchnorm": "bn", "check_cuda": "device",
    "Dataset": "data", "load_data": "data",
    "BATCHNORM_MODES": "kinds", "DEFAULT_TEMPERATURE": "kinds", "LOSSES": "kinds", "Loss": "kinds",
    "loss_from_labels": "kinds", "loss_named": "kinds",
    "TrainingSession": "session",
    "prepare_for_training": "trainable", "trainable_params": "trainable", "trained_params": "trainable",
    "LABELS": "data", "to_trainable": "forms", "untrainable_operator": "forms",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
