"""The options of `onnxoto prune`, declared once: the CLI is made from them, a typo raises, defaults agree."""
import dataclasses
import inspect

import numpy as np
import pytest
from click.testing import CliRunner

import onnxoto
from onnxoto.cli import main
from onnxoto.errors import OptionError
from onnxoto.optim import Hesso
from onnxoto.prune import PruneOptions, override
from onnxoto.train import LOSSES, loss_from_labels, loss_named

CLI_FIELDS = [f for f in dataclasses.fields(PruneOptions) if f.metadata.get("cli")]


def test_a_misspelled_option_raises_before_any_work():
    with pytest.raises(OptionError, match="target_sparsty.*did you mean target_sparsity"):
        onnxoto.prune("no-such-model.onnx", data="no-such-data.npz", target_sparsty=0.3)
    with pytest.raises(OptionError, match="unknown prune option 'colour'"):
        override(PruneOptions(), colour="red")


def test_overrides_are_checked_like_the_options():
    assert override(PruneOptions(), target_sparsity=0.3).target_sparsity == 0.3
    assert override(PruneOptions(), target_flops=0.4).target_sparsity is None  # the FLOPs budget replaces it
    with pytest.raises(OptionError, match="--target-sparsity"):
        override(PruneOptions(), target_sparsity=1.5)
    with pytest.raises(OptionError, match="--optimizer 'sgd'"):
        PruneOptions(optimizer="sgd")


def test_every_cli_field_is_a_prune_flag_with_its_default_and_help():
    text = " ".join(CliRunner().invoke(main, ["prune", "--help"], terminal_width=400).output.split())
    for f in CLI_FIELDS:
        assert "--" + f.name.replace("_", "-") + " " in text
        shown = " ".join(f.metadata["help"].split())
        if f.metadata["show_default"] and f.default is not None:
            shown += f" [default: {f.default}]"
        assert shown in text, f.name


@pytest.mark.parametrize("flag", ["--saliency-scope", "--optimizer", "--loss", "--batchnorm", "--base"])
def test_a_value_outside_the_choices_is_one_line_exit_2(flag):
    result = CliRunner().invoke(main, ["prune", "m.onnx", "--data", "d.npz", flag, "layer"])
    assert result.exit_code == 2 and result.output.startswith(f"error: {flag} 'layer': expected one of")
    assert result.output.strip().count("\n") == 0


def test_the_optimizer_and_the_options_share_their_defaults():
    hesso = inspect.signature(Hesso).parameters
    assert hesso["saliency_scope"].default == PruneOptions().saliency_scope


def test_the_demo_shares_the_epochs_option_with_its_own_default():
    text = CliRunner().invoke(main, ["demo", "--help"], terminal_width=400).output
    assert "Passes over the data.  [default: 8]" in text


def test_a_loss_says_what_it_compares_with():
    labels, teacher = np.array([1, 0]), [np.zeros((2, 3), np.float32)]
    assert loss_named("ce").targets(labels, teacher) is labels
    assert loss_named("ce+distill").targets(labels, teacher)[0] is labels
    assert loss_named("distill").targets(None, teacher) == teacher
    assert loss_from_labels(None) is LOSSES["distill"]
    assert loss_from_labels(np.zeros(3, np.int64)) is LOSSES["ce"]
    assert loss_from_labels(np.zeros(3, np.float32)) is LOSSES["mse"]
    assert loss_named("cross_entropy+distill") is LOSSES["ce+distill"]
    with pytest.raises(OptionError, match="unknown loss"):
        loss_named("hinge")
