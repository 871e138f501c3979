"""Training engine: trainable parameters, training artifacts, a session with in-place views, data, BN recalibration."""
from onnxoto.train.artifacts import Artifacts, LossSpec, build_artifacts, loss_for
from onnxoto.train.bn import check_recalibration, recalibrate_batchnorm
from onnxoto.train.data import Dataset, load_data
from onnxoto.train.session import TrainingSession
from onnxoto.train.trainable import prepare_for_training, trainable_params

__all__ = ["Artifacts", "Dataset", "LossSpec", "TrainingSession", "build_artifacts", "load_data", "loss_for",
           "prepare_for_training", "check_recalibration", "recalibrate_batchnorm", "trainable_params"]
