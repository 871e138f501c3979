"""`onnxoto prune` end to end with real onnxruntime-training steps on small models."""
import json
import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from onnxoto import graph, groups
from onnxoto.cli import main
from onnxoto.errors import OptionError
from onnxoto.prune import PruneOptions, prune

ROOT = os.path.join(os.path.dirname(__file__), "..")
DATA = os.path.join(ROOT, "onnxoto", "data")
MODELS = os.path.join(ROOT, "models")


@pytest.fixture(scope="module")
def fmnist_small(tmp_path_factory):
    """512 training and 256 test images of the bundled Fashion-MNIST data."""
    folder = tmp_path_factory.mktemp("fmnist")
    for name, n in (("fmnist_train.npz", 512), ("fmnist_test.npz", 256)):
        with np.load(os.path.join(DATA, name), allow_pickle=False) as d:
            np.savez(folder / name, x=d["x"][:n], labels=d["labels"][:n])
    return folder


def weights_of(path):
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def test_prune_fmnist_writes_a_smaller_verified_model_and_report(fmnist_small, tmp_path):
    out, report = tmp_path / "small.onnx", tmp_path / "report"
    result = CliRunner().invoke(main, [
        "prune", os.path.join(DATA, "fmnist_resnet.onnx"), "--data", str(fmnist_small / "fmnist_train.npz"),
        "--val", str(fmnist_small / "fmnist_test.npz"), "-o", str(out), "--epochs", "2", "--batch-size", "32",
        "--report", str(report), "--target-sparsity", "0.5"])
    assert result.exit_code == 0, result.output
    data = json.loads((report / "report.json").read_text())
    assert data["verified"] and data["max_rel_diff"] <= 1e-4
    assert data["group_sparsity"] == pytest.approx(0.5, abs=0.03)
    assert data["pruned"]["flops"] < data["dense"]["flops"] and data["pruned"]["params"] < data["dense"]["params"]
    assert {"params", "flops", "latency_ms", "metric"} <= set(data["dense"]) <= set(data["pruned"])
    assert 0.0 <= data["pruned"]["metric"] <= 1.0
    assert (report / "report.md").exists()
    # the settings as run, defaults resolved: cross-entropy from integer labels at its SGD rate, one process
    assert {k: data["settings"][k] for k in ("loss", "lr", "batchnorm", "saliency_scope", "target_sparsity")} == {
        "loss": "cross_entropy", "lr": 0.01, "batchnorm": "batch", "saliency_scope": "group", "target_sparsity": 0.5}
    assert "batchnorm batch" in (report / "report.md").read_text()
    cut = groups.analyze(graph.load(str(out)))  # the written file re-analyzes with the kept widths
    kept = sorted(g["kept"] for g in data["groups"])
    assert sorted(g.num_zigs for g in cut.prunable) == kept


def test_resume_after_interruption_gives_the_same_weights(fmnist_small, tmp_path):
    options = dict(epochs=2, batch_size=64, target_sparsity=0.4, seed=3)
    train = str(fmnist_small / "fmnist_train.npz")
    model = os.path.join(DATA, "fmnist_resnet.onnx")
    uninterrupted = prune(model, train, str(tmp_path / "full.onnx"), options=PruneOptions(**options),
                          log=lambda s: None)

    def interrupt(line):
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt
    work = tmp_path / "work"
    with pytest.raises(Exception, match="resume"):
        prune(model, train, str(tmp_path / "part.onnx"), options=PruneOptions(**options), workdir=str(work),
              log=interrupt)
    assert not (tmp_path / "part.onnx").exists()  # nothing half-written
    resumed_run = prune(model, train, str(tmp_path / "resumed.onnx"), options=PruneOptions(**options),
                        workdir=str(work), resume=True, log=lambda s: None)
    assert resumed_run.trace == uninterrupted.trace  # the report's loss curve survives the interruption
    full, resumed = weights_of(tmp_path / "full.onnx"), weights_of(tmp_path / "resumed.onnx")
    assert full.keys() == resumed.keys()
    for name in full:
        np.testing.assert_array_equal(full[name], resumed[name])


@pytest.mark.parametrize("name", ["vgg_bn.onnx", "unet.onnx", "densenet.onnx", "forms_mobilenetv3.onnx",
                                  "forms_two_outputs.onnx"])
def test_distillation_prunes_without_labels(tmp_path, name):
    """Any model, no labels: including ops that train only through rewritten forms (ConvTranspose,
    AveragePool, HardSwish, HardSigmoid) and a model with two outputs."""
    rng = np.random.default_rng(0)
    data = tmp_path / "unlabeled.npz"
    np.savez(data, x=rng.standard_normal((96, 3, 32, 32)).astype(np.float32))
    result = prune(os.path.join(MODELS, name), str(data), str(tmp_path / "pruned.onnx"),
                   options=PruneOptions(epochs=2, batch_size=16, target_sparsity=0.3, base="adamw"),
                   log=lambda s: None)
    assert result.verified and result.group_sparsity == pytest.approx(0.3, abs=0.05)


def test_cross_entropy_plus_distillation_prunes_from_labels_and_the_dense_teacher(fmnist_small, tmp_path):
    out = tmp_path / "kd.onnx"
    result = CliRunner().invoke(main, [
        "prune", os.path.join(DATA, "fmnist_resnet.onnx"), "--data", str(fmnist_small / "fmnist_train.npz"),
        "--val", str(fmnist_small / "fmnist_test.npz"), "-o", str(out), "--epochs", "2", "--batch-size", "64",
        "--target-flops", "0.3", "--loss", "ce+distill", "--distill-weight", "2", "--temperature", "3",
        "--report", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["verified"] and data["pruned"]["flops"] <= 0.7 * data["dense"]["flops"]
    assert data["metric"] == "accuracy" and 0.0 <= data["pruned"]["metric"] <= 1.0
    assert all(np.isfinite(record["loss"]) for record in data["history"])
    seconds = data["seconds"]  # where the time went: the steps and every phase around them, within the total
    assert {"training steps", "teacher outputs", "validation", "cut and certificate", "measuring"} <= set(seconds)
    assert sum(v for k, v in seconds.items() if k != "total") <= seconds["total"]


def test_cross_entropy_plus_distillation_needs_labels(tmp_path):
    data = tmp_path / "unlabeled.npz"
    np.savez(data, x=np.zeros((8, 1, 28, 28), np.uint8))
    result = CliRunner().invoke(main, ["prune", os.path.join(DATA, "fmnist_resnet.onnx"), "--data", str(data),
                                       "-o", str(tmp_path / "never.onnx"), "--loss", "ce+distill"])
    assert result.exit_code == 2 and "needs integer class labels" in result.output, result.output


def test_transformer_prunes_heads_and_ffn_width(tmp_path):
    rng = np.random.default_rng(1)
    data = tmp_path / "tokens.npz"
    np.savez(data, x=rng.integers(0, 100, (64, 16)).astype(np.int64), labels=rng.integers(0, 10, 64))
    result = prune(os.path.join(MODELS, "transformer.onnx"), str(data), str(tmp_path / "t.onnx"),
                   options=PruneOptions(epochs=3, batch_size=16, target_sparsity=0.4, base="adamw"),
                   log=lambda s: None)
    assert result.verified
    widths = {g["channels"]: g["kept"] for g in result.groups}
    assert any(g["channels"] == 4 and g["kept"] < 4 for g in result.groups) or \
        any(g["channels"] == 64 and g["kept"] < 64 for g in result.groups)
    assert widths


@pytest.mark.parametrize("args, message", [
    (["--data", "missing.npz"], "no such file"),
    (["--data", "{bad_shape}"], "x"),
    (["--data", "{train}", "--target-sparsity", "1.5"], "target-sparsity"),
    (["--data", "{train}", "--epochs", "0"], "epochs"),
    (["--data", "{train}", "--saliency-scope", "layer"], "saliency-scope"),
])
def test_bad_input_is_one_line_exit_2(fmnist_small, tmp_path, args, message):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 3, 28, 28), np.uint8), labels=np.zeros(4, np.int64))
    args = [a.format(bad_shape=bad, train=fmnist_small / "fmnist_train.npz") for a in args]
    out = tmp_path / "never.onnx"
    result = CliRunner().invoke(main, ["prune", os.path.join(DATA, "fmnist_resnet.onnx"), "-o", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.strip().count("\n") == 0
    assert not out.exists()


def test_bench_compares_two_models(tmp_path):
    out = tmp_path / "bench.json"
    dense = os.path.join(DATA, "fmnist_resnet.onnx")
    result = CliRunner().invoke(main, ["bench", dense, dense, "--data", os.path.join(DATA, "fmnist_test.npz"),
                                       "--batch", "8", "--repeats", "3", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    for side in ("dense", "pruned"):
        assert {"params", "flops", "latency_ms", "metric"} <= set(data[side])
        assert {"batch1", "batchN"} <= set(data[side]["latency_ms"])
    assert data["dense"]["metric"] == data["pruned"]["metric"] > 0.9
    assert data["ideal_speedup"] == 1.0


@pytest.mark.parametrize("model, data_kind", [("fmnist", "images"), ("transformer", "tokens")])
def test_erase_removes_whole_branches(fmnist_small, tmp_path, model, data_kind):
    if data_kind == "images":
        path, data = os.path.join(DATA, "fmnist_resnet.onnx"), str(fmnist_small / "fmnist_train.npz")
    else:
        rng = np.random.default_rng(2)
        path, data = os.path.join(MODELS, "transformer.onnx"), str(tmp_path / "tokens.npz")
        np.savez(data, x=rng.integers(0, 100, (64, 16)).astype(np.int64), labels=rng.integers(0, 10, 64))
    out = tmp_path / "erased.onnx"
    result = prune(path, data, str(out), options=PruneOptions(epochs=2, batch_size=32, target_sparsity=0.2,
                                                              erase=0.5, base="adamw"), log=lambda s: None)
    assert result.verified and len(result.erased) >= 1
    nodes = {n.name for n in onnx.load(out).graph.node}
    for unit in result.erased:
        assert not nodes & set(unit["nodes"])  # the branch's operators are gone
        assert unit["flops_share"] > 0
    assert not any(n.op_type == "Identity" for n in onnx.load(out).graph.node)


def test_python_api_mirrors_the_command(fmnist_small, tmp_path):
    import onnxoto
    result = onnxoto.prune(os.path.join(DATA, "fmnist_resnet.onnx"), data=str(fmnist_small / "fmnist_train.npz"),
                           output=str(tmp_path / "api.onnx"), epochs=1, batch_size=64, target_sparsity=0.25,
                           log=lambda s: None)
    assert isinstance(result, onnxoto.prune.PruneResult)
    assert result.verified and os.path.exists(result.pruned_model)


def test_saliency_scope_reaches_the_optimizer_and_is_checked(fmnist_small, tmp_path):
    with pytest.raises(OptionError, match="saliency-scope"):
        PruneOptions(saliency_scope="layer").validate()
    result = prune(os.path.join(DATA, "fmnist_resnet.onnx"), str(fmnist_small / "fmnist_train.npz"),
                   str(tmp_path / "global.onnx"), log=lambda s: None,
                   options=PruneOptions(epochs=1, batch_size=64, target_sparsity=0.3, saliency_scope="global"))
    assert result.verified and result.group_sparsity > 0.2


def test_batchnorm_modes_write_statistics_that_match_the_weights(fmnist_small, tmp_path):
    """On batch statistics the written model's running statistics are its own data's (recalibrated);
    frozen, they stay the dense model's, which the weights were trained against."""
    from onnxoto.train import load_data, recalibrate_batchnorm

    train = str(fmnist_small / "fmnist_train.npz")
    dense = onnx.load(os.path.join(DATA, "fmnist_resnet.onnx"))
    written = {}
    for mode in ("batch", "frozen"):
        out = tmp_path / f"{mode}.onnx"
        result = prune(os.path.join(DATA, "fmnist_resnet.onnx"), train, str(out), log=lambda s: None,
                       options=PruneOptions(epochs=1, batch_size=64, target_sparsity=0.3, batchnorm=mode))
        assert result.verified
        written[mode] = onnx.load(out)
    model = written["batch"]
    again = recalibrate_batchnorm(model, load_data(train, model), batches=100, batch_size=64)
    stats = [n.input[k] for n in model.graph.node if n.op_type == "BatchNormalization" for k in (3, 4)]
    mine, theirs = weights_of_proto(model), weights_of_proto(again)
    for name in stats:
        np.testing.assert_allclose(mine[name], theirs[name], rtol=1e-4, atol=1e-6, err_msg=name)
    # frozen: every kept channel's statistics are the dense model's
    frozen, original = weights_of_proto(written["frozen"]), weights_of_proto(dense)
    changed = [name for name in stats if not np.isin(frozen[name], original[name]).all()]
    assert not changed
    assert any(not np.isin(mine[name], original[name]).all() for name in stats)


def test_batch_statistics_need_one_process():
    assert PruneOptions().batchnorm_mode(1) == "batch"
    assert PruneOptions().batchnorm_mode(2) == "frozen"
    with pytest.raises(OptionError, match="--batchnorm batch runs in one process"):
        PruneOptions(batchnorm="batch").batchnorm_mode(2)
    with pytest.raises(OptionError, match="--batchnorm"):
        PruneOptions(batchnorm="train").validate()


def weights_of_proto(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
