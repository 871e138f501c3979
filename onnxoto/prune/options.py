"""Options of `onnxoto prune`, their defaults, and the combinations refused up front."""
from dataclasses import asdict, dataclass, field

from ..errors import OptionError
from ..optim.hesso import SCOPES
from ..train.trainable import BATCHNORM_MODES

OPTIMIZERS = ("hesso", "hesso-cric", "dhspg")
BASES = ("sgd", "adamw")
LOSSES = ("ce", "mse", "distill", "ce+distill")
DEFAULT_LR = {"sgd": 0.01, "adamw": 1e-3}
DISTILL_SGD_LR = 1e-3  # the MSE on raw outputs has larger gradients than cross-entropy: SGD at 0.01 diverges
# cross-entropy's curvature vanishes on confident predictions, the KL term's does not: with it and BatchNorm
# frozen, SGD diverged on the demo model at 0.01 and 0.005 (any weight from 0.2, any temperature from 1) and was
# stable at 0.002. On batch statistics it trains at 0.005-0.04 (the demo uses 0.02): a model without
# normalization has no such guard, so the default stays safe.
CE_DISTILL_SGD_LR = 2e-3


@dataclass
class PruneOptions:
    target_sparsity: float | None = 0.5  # fraction of ZIGs (channels) removed
    target_flops: float | None = None  # fraction of FLOPs removed (instead of target_sparsity)
    optimizer: str = "hesso"
    epochs: int = 5
    batch_size: int = 64
    lr: float | None = None  # default by base: sgd 0.01, adamw 1e-3
    base: str = "sgd"
    lr_decay: bool = True  # cosine decay to zero after the pruning phase
    loss: str | None = None  # default from the labels: ce for classes, mse for floats, distill without labels
    distill_weight: float = 1.0  # ce+distill: factor of the KL term
    temperature: float = 4.0  # ce+distill: softmax temperature of the KL term
    round_to: int = 1  # kept channels per group a multiple of this
    device: str = "cpu"
    seed: int = 0
    erase: float = 0.0  # fraction of erasable branches (of an Add or a Concat) to remove whole
    saliency_scope: str = "group"  # rank each channel against its own layer, or all globally (HESSO's, "global")
    batchnorm: str | None = None  # "batch" or "frozen" statistics in training; None: batch in one process
    input_shapes: dict = field(default_factory=dict)  # input name -> sizes (-1 keeps a dim symbolic); else the data's
    verify_batches: int = 4
    extra: dict = field(default_factory=dict)  # optimizer keyword arguments (start_pruning_step, ...)

    def validate(self):
        if self.optimizer not in OPTIMIZERS:
            raise OptionError(f"--optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if self.saliency_scope not in SCOPES:
            raise OptionError(f"--saliency-scope {self.saliency_scope!r}: expected one of {', '.join(SCOPES)}")
        if self.batchnorm is not None and self.batchnorm not in BATCHNORM_MODES:
            raise OptionError(f"--batchnorm {self.batchnorm!r}: expected one of {', '.join(BATCHNORM_MODES)}")
        if self.base not in BASES:
            raise OptionError(f"--base {self.base!r}: expected one of {', '.join(BASES)}")
        if self.loss is not None and self.loss not in LOSSES:
            raise OptionError(f"--loss {self.loss!r}: expected one of {', '.join(LOSSES)}")
        if self.target_flops is not None:
            self.target_sparsity = None
            _fraction("--target-flops", self.target_flops)
        else:
            _fraction("--target-sparsity", self.target_sparsity)
        if self.epochs < 1 or self.batch_size < 1:
            raise OptionError("--epochs and --batch-size must be at least 1")
        if self.round_to < 1:
            raise OptionError("--round-to must be at least 1")
        if self.device not in ("cpu", "cuda"):
            raise OptionError(f"--device {self.device!r}: expected cpu or cuda")
        if not 0.0 <= self.erase < 1.0:
            raise OptionError(f"--erase must be a fraction in [0, 1), got {self.erase}")
        if self.distill_weight < 0 or self.temperature <= 0:
            raise OptionError("--distill-weight must be >= 0 and --temperature positive")
        if self.lr is not None and self.lr <= 0:
            raise OptionError("--lr must be positive")
        return self

    def learning_rate(self, loss_kind):
        """--lr, or the default for the base optimizer and the loss."""
        if self.lr is not None:
            return self.lr
        if self.base == "sgd" and loss_kind in ("distill", "cross_entropy+distill"):
            return DISTILL_SGD_LR if loss_kind == "distill" else CE_DISTILL_SGD_LR
        return DEFAULT_LR[self.base]

    def resolved(self, loss_kind, ranks):
        """The options as a run uses them (for its report): defaults filled in, no internals."""
        settings = {k: v for k, v in asdict(self).items() if k not in ("extra", "verify_batches")}
        settings["input_shapes"] = {k: list(v) for k, v in self.input_shapes.items()}
        settings.update(lr=self.learning_rate(loss_kind), loss=loss_kind, batchnorm=self.batchnorm_mode(ranks),
                        ranks=ranks)
        return settings

    def batchnorm_mode(self, ranks):
        """How BatchNorm trains: on batch statistics in one process; several ranks would each normalize
        by their own part of the batch and compute something else than one process, so they freeze it."""
        if self.batchnorm == "batch" and ranks > 1:
            raise OptionError(f"--batchnorm batch runs in one process (here {ranks} ranks): "
                              "use --batchnorm frozen")
        return self.batchnorm or ("batch" if ranks == 1 else "frozen")

    @property
    def loss_kind(self):
        return {"ce": "cross_entropy", "mse": "mse", "distill": "distill", "ce+distill": "cross_entropy+distill",
                None: None}[self.loss]


def _fraction(flag, value):
    if value is None or not 0.0 < value < 1.0:
        raise OptionError(f"{flag} must be between 0 and 1 (exclusive), got {value}")
