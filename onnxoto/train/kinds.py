"""The kinds of training a run chooses between: the losses, as small objects saying what each compares the
outputs with (so no stage compares loss names), and how BatchNorm trains. Light: the CLI reads it."""
from dataclasses import dataclass

import numpy as np

from ..errors import OptionError


@dataclass(frozen=True)
class Loss:
    name: str  # in the training graph's spec and the report
    flag: str  # --loss
    class_labels: bool  # compares with integer class labels (the first target)
    teacher: bool  # compares with the original model's outputs (the targets after any labels)
    regression: bool = False  # the outputs are values, not class scores: the metric is the MSE
    all_outputs: bool = False  # compares every model output, not only the first
    sgd_lr: float | None = None  # a safe SGD rate where the base optimizer's default diverges

    def targets(self, labels, teacher_outputs):
        """The arrays the loss compares with, in the order of its spec's targets; cross-entropy alone
        takes one array, not a list."""
        if not self.teacher:
            return labels
        return [labels, *teacher_outputs] if self.class_labels else list(teacher_outputs)


# distill: the MSE on raw outputs has larger gradients than cross-entropy: SGD at 0.01 diverges.
# ce+distill: cross-entropy's curvature vanishes on confident predictions, the KL term's does not: with it and
# BatchNorm frozen, SGD diverged on the demo model at 0.01 and 0.005 (any weight from 0.2, any temperature from
# 1) and was stable at 0.002. On batch statistics it trains at 0.005-0.04 (the demo uses 0.02): a model without
# normalization has no such guard, so the default stays safe.
CROSS_ENTROPY = Loss("cross_entropy", "ce", class_labels=True, teacher=False)
# the pipeline's MSE compares with the original model's outputs (its first), as distill does: float labels
# are checked but not read (README says "float targets"; left as it was, see issue 14's report)
MSE = Loss("mse", "mse", class_labels=False, teacher=True, regression=True)
DISTILL = Loss("distill", "distill", class_labels=False, teacher=True, all_outputs=True, sgd_lr=1e-3)
CE_DISTILL = Loss("cross_entropy+distill", "ce+distill", class_labels=True, teacher=True, sgd_lr=2e-3)
DEFAULT_TEMPERATURE = 4.0  # of the distillation term mixed with cross-entropy (Hinton et al.)
LOSSES = {loss.flag: loss for loss in (CROSS_ENTROPY, MSE, DISTILL, CE_DISTILL)}
_BY_NAME = {loss.name: loss for loss in LOSSES.values()}


def loss_named(name):
    """The loss of a --loss flag (ce, mse, ...) or a spec's name (cross_entropy, ...)."""
    loss = LOSSES.get(name) or _BY_NAME.get(name)
    if loss is None:
        raise OptionError(f"unknown loss {name!r}: expected one of {', '.join(LOSSES)}")
    return loss


def loss_from_labels(labels):
    """Without --loss: cross-entropy for integer labels, MSE for float ones, distillation without labels."""
    if labels is None:
        return DISTILL
    return CROSS_ENTROPY if np.issubdtype(labels.dtype, np.integer) else MSE


# How BatchNormalization trains: "batch" normalizes by each batch's statistics, as the framework
# trained it (onnxruntime's training graph turns BatchNormalization into BatchNormInternal; the running
# statistics go stale and are recalibrated after training, train.bn); "frozen" is the affine op
# x * s + t of inference mode over the stored running statistics, which then stay exact.
BATCHNORM_MODES = ("batch", "frozen")
