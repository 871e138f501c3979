"""Options of `onnxoto prune`, declared once: each a field with its default and help (the CLI is made from
them, cli.py), checked once when the options are made; overrides through `override`, so a typo raises."""
import dataclasses
import difflib
from dataclasses import asdict, dataclass, field

from ..errors import OptionError
from ..optim import DEFAULT_SALIENCY_SCOPE, SCOPES
from ..train import BATCHNORM_MODES, DEFAULT_TEMPERATURE, LOSSES, loss_named

OPTIMIZERS = ("hesso", "hesso-cric", "dhspg")
BASES = ("sgd", "adamw")
DEVICES = ("cpu", "cuda")
DEFAULT_LR = {"sgd": 0.01, "adamw": 1e-3}  # SGD's where the loss has no safer rate of its own (Loss.sgd_lr)


def option(default, help, type=None, choices=None, show_default=True, cli=True):
    """A field of PruneOptions with what its `--flag` needs: help, the click type, allowed values.
    show_default=False where the help states a default that depends on other options."""
    return field(default=default, metadata={"help": help, "type": type, "choices": choices,
                                            "show_default": show_default, "cli": cli})


@dataclass
class PruneOptions:
    target_sparsity: float | None = option(0.5, "Fraction of channels (ZIGs) to remove.", type=float)
    target_flops: float | None = option(None, "Fraction of FLOPs to remove (instead of --target-sparsity).",
                                        type=float, show_default=False)
    target_latency: float | None = option(None, "Keep at most this fraction of the dense latency at the latency "
                                                "table's batch (instead of --target-sparsity).", type=float,
                                          show_default=False)
    latency_table: str | None = option(None, "`onnxoto profile`'s table from the deployment machine [measured "
                                             "here when needed].", show_default=False)
    optimizer: str = option("hesso", "hesso, hesso-cric (corrective cycles + loss sensitivity) or dhspg (OTOv2).",
                            choices=OPTIMIZERS)
    epochs: int = option(5, "Passes over the data.", type=int)
    batch_size: int = option(64, "Rows per training step.", type=int)
    lr: float | None = option(None, "Learning rate [sgd 0.01 (0.001 with distillation, 0.002 with ce+distill), "
                                    "adamw 0.001].", type=float, show_default=False)
    base: str = option("sgd", "Base optimizer whose direction HESSO follows.", choices=BASES)
    lr_decay: bool = option(True, "Cosine decay to zero after the pruning phase.", cli=False)
    loss: str | None = option(None, "Default: ce for integer labels, mse for float labels, distill without "
                                    "labels. ce+distill: cross-entropy plus KL divergence from the original "
                                    "model's softened outputs.", choices=tuple(LOSSES), show_default=False)
    distill_weight: float = option(1.0, "ce+distill: factor of the KL term.", type=float)
    temperature: float = option(DEFAULT_TEMPERATURE, "ce+distill: softmax temperature of the KL term.", type=float)
    round_to: int | str = option(1, "Keep channel counts a multiple of K (below K, of K/2); auto: the block the "
                                    "latency table shows fast.")
    device: str = option("cpu", "Where training runs.", choices=DEVICES)
    seed: int = option(0, "Shuffling and everything random.", type=int)
    erase: float = option(0.0, "Fraction of erasable branches (residual or Concat) to remove whole (OTOv3).",
                          type=float)
    saliency_scope: str = option(DEFAULT_SALIENCY_SCOPE, "global: rank all channels in one list; group: each "
                                 "against the mean of its own layer.", choices=SCOPES)
    batchnorm: str | None = option(None, "BatchNorm in training: batch statistics, running ones recalibrated "
                                         "after (default in one process), or frozen running statistics (default "
                                         "on several ranks).", choices=BATCHNORM_MODES, show_default=False)
    allow_io_change: bool = option(False, "Let groups change graph inputs and outputs they reach together (a KV "
                                          "cache: past/present lose the cut heads; the new shapes go to the report "
                                          "and the model's metadata).", type=bool,
                                  show_default=False)
    verify_batches: int = option(4, "Batches of the training data the certificate runs on.", cli=False)
    # input name -> sizes (-1 keeps a dim symbolic), from --input-shape (cli.py); empty: the data's sizes
    input_shapes: dict = field(default_factory=dict, metadata={"cli": False})
    # glob -> fraction, from --group-target (cli.py): groups whose id or layer matches have that sparsity
    # target of their own (all ZIGs they hold together), outside --target-sparsity's budget
    group_targets: dict = field(default_factory=dict, metadata={"cli": False})
    extra: dict = field(default_factory=dict, metadata={"cli": False})  # optimizer keyword arguments

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Refuse impossible values with one line naming the option; with --target-flops, the FLOPs
        budget replaces the sparsity one."""
        for f in dataclasses.fields(self):
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise OptionError(f"{flag(f.name)} {value!r}: expected one of {', '.join(choices)}")
        if self.target_latency is not None:
            if self.target_flops is not None:
                raise OptionError("--target-latency and --target-flops: give one target")
            if self.erase:
                raise OptionError("--target-latency does not erase branches yet: drop --erase")
            self.target_sparsity = None
            _fraction("--target-latency", self.target_latency)
        elif self.target_flops is not None:
            self.target_sparsity = None
            _fraction("--target-flops", self.target_flops)
        else:
            _fraction("--target-sparsity", self.target_sparsity)
        if self.epochs < 1 or self.batch_size < 1:
            raise OptionError("--epochs and --batch-size must be at least 1")
        self.round_to = _round_to(self.round_to)
        if not 0.0 <= self.erase < 1.0:
            raise OptionError(f"--erase must be a fraction in [0, 1), got {self.erase}")
        if self.distill_weight < 0 or self.temperature <= 0:
            raise OptionError("--distill-weight must be >= 0 and --temperature positive")
        for pattern, fraction in self.group_targets.items():
            _fraction(f"--group-target {pattern}", fraction)
        if self.lr is not None and self.lr <= 0:
            raise OptionError("--lr must be positive")
        return self

    def learning_rate(self, loss):
        """--lr, or the default for the base optimizer and the loss (a train.Loss)."""
        if self.lr is not None:
            return self.lr
        if self.base == "sgd" and loss.sgd_lr is not None:
            return loss.sgd_lr
        return DEFAULT_LR[self.base]

    def resolved(self, loss, ranks):
        """The options as a run uses them (for its report): defaults filled in, no internals."""
        settings = {k: v for k, v in asdict(self).items() if k not in ("extra", "verify_batches")}
        settings.update(lr=self.learning_rate(loss), loss=loss.name, batchnorm=self.batchnorm_mode(ranks),
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
    def needs_latency(self):
        """Whether the run needs a latency table (given, or measured on this machine)."""
        return self.target_latency is not None or self.round_to == "auto"

    @property
    def loss_choice(self):
        """The loss --loss names (a train.Loss), or None: then the labels decide."""
        return None if self.loss is None else loss_named(self.loss)


def override(options, **changes):
    """A copy of `options` with `changes`, checked again; an unknown name raises (a typo is never ignored)."""
    names = [f.name for f in dataclasses.fields(PruneOptions)]
    for name in changes:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise OptionError(f"unknown prune option {name!r}{hint}")
    return dataclasses.replace(options, **changes)


def flag(name):
    return "--" + name.replace("_", "-")


def _fraction(flag_name, value):
    if value is None or not 0.0 < value < 1.0:
        raise OptionError(f"{flag_name} must be between 0 and 1 (exclusive), got {value}")


def _round_to(value):
    """--round-to: "auto" or a whole number of at least 1."""
    if value == "auto":
        return value
    try:
        block = int(str(value))
    except ValueError:
        block = 0
    if block < 1:
        raise OptionError(f"--round-to {value!r}: expected a whole number of at least 1, or auto")
    return block
