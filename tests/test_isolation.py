"""Real models make onnxruntime die (SIGFPE) or refuse inputs: every such run happens in a child
process, so that a crash is one line (command, model, signal, step) with exit code 2 and nothing written;
generated inputs are ones the dense model accepts; sizes can be bound with --input-shape; a batch fixed
to 1 in the file still trains on batches."""
import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from crash_models import batch_one_cnn, images, log_net, mask_and_index_net, sigfpe_below, stateful_net
from onnxoto import graph
from onnxoto.cli import main
from onnxoto.errors import ModelError, OptionError
from onnxoto.train import TrainingSession
from onnxoto.verify.inputs import random_inputs


def saved(tmp_path, model, name="model.onnx"):
    path = tmp_path / name
    onnx.save(model, path)
    return str(path)


def data(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_verify_searches_sizes_the_dense_model_survives(tmp_path):
    """The model dies of SIGFPE below 32: verify's generated inputs move up from 16 and certify."""
    result = CliRunner().invoke(main, ["verify", saved(tmp_path, sigfpe_below(32)), "--json", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    cert = json.loads((tmp_path / "c.json").read_text())
    assert cert["groups_verified"] == cert["groups_prunable"] == 1


def test_a_crash_on_real_data_is_one_line_naming_command_model_and_signal(tmp_path):
    model = saved(tmp_path, sigfpe_below(32), "guarded.onnx")
    result = CliRunner().invoke(main, ["verify", model, "--data", data(tmp_path, x=images(4, 16))])
    one_line_error(result, "verify", "guarded.onnx", "SIGFPE", "4x3x16x16")
    result = CliRunner().invoke(main, ["verify", model, "--data", data(tmp_path, "big.npz", x=images(4, 32))])
    assert result.exit_code == 0, result.output


def test_prune_on_data_the_model_dies_on_writes_nothing(tmp_path):
    out = tmp_path / "small.onnx"
    result = CliRunner().invoke(main, ["prune", saved(tmp_path, sigfpe_below(32), "guarded.onnx"), "--data",
                                       data(tmp_path, x=images(8, 16)), "-o", str(out), "--epochs", "1",
                                       "--input-shape", "x:-1x3x-1x-1"])
    one_line_error(result, "prune", "guarded.onnx", "SIGFPE")
    assert list(tmp_path.iterdir()) == [tmp_path / "guarded.onnx", tmp_path / "data.npz"]


def test_a_crash_folding_shapes_bound_from_the_data_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["prune", saved(tmp_path, sigfpe_below(32), "guarded.onnx"), "--data",
                                       data(tmp_path, x=images(8, 16)), "--epochs", "1"])
    one_line_error(result, "guarded.onnx", "SIGFPE", "folding")


def test_a_crash_in_the_first_training_step_is_a_model_error():
    """onnxruntime's AveragePool gradient dies of SIGFPE on the CPU (the prune path trains it as a Conv)."""
    from edge_helpers import Net
    net = Net(opset=13)
    pooled = net.op("AveragePool", [net.conv(net.input("x", ("N", 3, 8, 8)), 3, 4)], kernel_shape=[2, 2],
                    strides=[2, 2])
    model = net.model(net.conv(pooled, 4, 2))
    rng = np.random.default_rng(0)
    inputs, target = {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}, [np.zeros((2, 2, 4, 4), np.float32)]
    with pytest.raises(ModelError, match=r"cannot train net: onnxruntime crashed \(SIGFPE\) while taking a first "
                                         r"training step on 2 rows"):
        TrainingSession(model, "distill", probe=(inputs, target))


def test_input_shape_binds_sizes_and_flops_follow_them(tmp_path):
    model = saved(tmp_path, sigfpe_below(32))
    flops = {}
    for size in (32, 64):
        result = CliRunner().invoke(main, ["analyze", model, "--input-shape", f"x:1x3x{size}x{size}", "--json",
                                           str(tmp_path / "a.json")])
        assert result.exit_code == 0, result.output
        assert f"input sizes: x 1x3x{size}x{size}" in result.output
        flops[size] = json.loads((tmp_path / "a.json").read_text())["flops"]
    assert 3.9 < flops[64] / flops[32] < 4.1
    result = CliRunner().invoke(main, ["analyze", model])
    assert "symbolic dims N, H, W counted as 1" in result.output


@pytest.mark.parametrize("spec, message", [("y:1x3x8x8", "has no input 'y'"), ("x:1x3x8", "rank 4"),
                                           ("x:1x4x8x8", "static size 3"), ("x:1xAx8x8", "NAME:DIMS"),
                                           ("1x3x8x8", "NAME:DIMS")])
def test_bad_input_shapes_are_one_line(tmp_path, spec, message):
    result = CliRunner().invoke(main, ["analyze", saved(tmp_path, sigfpe_below(32)), "--input-shape", spec])
    one_line_error(result, message)


def test_generated_integer_inputs_are_indices_within_their_table_or_masks():
    model = graph.from_proto(mask_and_index_net(vocab=7))
    feeds = random_inputs(model, np.random.default_rng(0), batch=64, size=64)
    assert feeds["ids"].dtype == np.int32 and feeds["ids"].min() >= 0 and feeds["ids"].max() == 6
    assert set(np.unique(feeds["mask"])) == {0, 1}


def test_non_finite_dense_outputs_stop_with_one_line_saying_to_pass_data(tmp_path):
    model = saved(tmp_path, log_net(), "log.onnx")
    one_line_error(CliRunner().invoke(main, ["verify", model]), "not finite", "--data")
    positive = np.abs(images(4, 8)) + 1.0
    result = CliRunner().invoke(main, ["verify", model, "--data", data(tmp_path, x=positive)])
    assert "not finite" not in result.output


@pytest.mark.parametrize("symbolic_ok, says", [(True, "symbolic batch (checked on 3 rows)"),
                                               (False, "one row at a time, gradients accumulated over 8 rows")])
def test_a_batch_fixed_to_one_trains_on_batches(tmp_path, symbolic_ok, says):
    out = tmp_path / "small.onnx"
    result = CliRunner().invoke(main, ["prune", saved(tmp_path, batch_one_cnn(symbolic_ok)), "--data",
                                       data(tmp_path, x=images(16, 8)), "-o", str(out), "--epochs", "2",
                                       "--batch-size", "8", "--target-sparsity", "0.5"])
    assert result.exit_code == 0, result.output
    assert says in result.output
    assert "cut model verified" in result.output
    assert onnx.load(str(out)).graph.initializer  # written


def test_accumulated_row_gradients_equal_the_batch_gradient():
    model = batch_one_cnn(symbolic_ok=True)
    from onnxoto.prune.batch import with_symbolic_batch
    relaxed = with_symbolic_batch(model, ["x"])
    rng = np.random.default_rng(0)
    inputs = {"x": images(4, 8)}
    target = [rng.standard_normal((4, 3)).astype(np.float32)]
    grads = []
    for rows in (None, 1):
        with TrainingSession(relaxed, "distill") as session:
            session.rows_per_run = rows
            loss = session.train_step(inputs, target)
            grads.append((loss, {k: g.copy() for k, g in session.grads.items()}))
    assert np.isclose(grads[0][0], grads[1][0], rtol=1e-5)
    for name, g in grads[0][1].items():
        np.testing.assert_allclose(grads[1][1][name], g, rtol=1e-4, atol=1e-6)


def stateful_data(tmp_path, rows=16, state_batch=1, name="data.npz"):
    rng = np.random.default_rng(1)
    return data(tmp_path, name, x=images(rows, 8), sr=np.array(16000, np.int64),
                state=rng.standard_normal((2, state_batch, 4)).astype(np.float32))


@pytest.mark.parametrize("state_batch, says", [(1, "one row at a time")])
def test_scalar_and_state_inputs_are_fed_whole_to_every_run(tmp_path, state_batch, says):
    """Silero VAD's sample rate (a 0-d input) and recurrent state (2 x batch x 128) are not rows: each array
    is fed as it is to every run. A state of batch 1 against 8 rows of x makes the dense model run one row at a
    time (its Concat needs the batches to agree)."""
    out = tmp_path / "small.onnx"
    result = CliRunner().invoke(main, ["prune", saved(tmp_path, stateful_net()), "--data",
                                       stateful_data(tmp_path, state_batch=state_batch), "-o", str(out),
                                       "--epochs", "2", "--batch-size", "8", "--target-sparsity", "0.5"])
    assert result.exit_code == 0, result.output
    assert says in result.output and "Traceback" not in result.output
    assert "cut model verified" in result.output
    small = onnx.load(str(out))
    assert {i.name for i in small.graph.input} == {"x", "state", "sr"}
    assert sum(i.dims[0] for i in small.graph.initializer if i.name.startswith("conv1")) < 6 + 6  # cut
    result = CliRunner().invoke(main, ["verify", saved(tmp_path, stateful_net()), "--data",
                                       stateful_data(tmp_path, state_batch=state_batch)])
    assert result.exit_code == 0 and "verified" in result.output, result.output


def test_the_whole_input_rule_reads_the_declared_shape():
    assert graph.fed_whole(()) and graph.fed_whole((2, "N", 128)) and graph.fed_whole((2, 1, 128))
    assert not graph.fed_whole(("N", 3)) and not graph.fed_whole((1, 576)) and not graph.fed_whole(None)
    assert graph.whole_inputs(stateful_net()) == {"state", "sr"}


@pytest.mark.parametrize("arrays, message", [
    (dict(sr=np.full(16, 16000, np.int64)), "'sr' has shape (16,), but the model input is a scalar"),
    (dict(state=np.zeros((16, 1, 4), np.float32)), "'state' has shape (16, 1, 4), but the model input is of fixed"),
    (dict(state=np.zeros((2, 8, 4), np.float32)), "its axis 1 is the batch ('N', axis 0 of the inputs that take rows)"),
])
def test_a_whole_input_of_the_wrong_shape_is_one_line(tmp_path, arrays, message):
    feeds = dict(x=images(16, 8), sr=np.array(16000, np.int64), state=np.zeros((2, 1, 4), np.float32)) | arrays
    result = CliRunner().invoke(main, ["prune", saved(tmp_path, stateful_net()), "--data", data(tmp_path, **feeds)])
    one_line_error(result, message)


def test_generated_inputs_give_a_whole_input_one_state_for_every_row(tmp_path):
    model = graph.from_proto(stateful_net(), "stateful", strict=True)
    feeds = random_inputs(model, np.random.default_rng(0), batch=4)
    assert feeds["x"].shape[0] == 4 and feeds["state"].shape == (2, 1, 4) and feeds["sr"].shape == ()
    result = CliRunner().invoke(main, ["verify", saved(tmp_path, stateful_net())])
    assert result.exit_code == 0 and "verified" in result.output, result.output
