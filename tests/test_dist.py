"""Data-parallel pruning: the collective layer's pieces in one process, then `mpirun -n 2` runs that must
equal a single-process run with the same global batch and seed (skipped where mpirun or mpi4py is missing)."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxoto.dist import Communicator, param_checksum, shard, source_for
from onnxoto.dist.data import GlobalBatchShard, LocalShard, part_of
from onnxoto.dist.flat import FlatBuffer
from onnxoto.train.data import Dataset

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "onnxoto", "data")
MODEL = os.path.join(DATA, "fmnist_resnet.onnx")
TRAIN = os.path.join(DATA, "fmnist_train.npz")
SAMPLES = 256
TOLERANCE = 1e-4  # per tensor: max |w_mpi - w_single| / max |w_single|


# --- one process: the pieces ------------------------------------------------------------------
def test_parts_of_a_batch_cover_it_once_in_order():
    for count in (1, 5, 32, 33):
        for size in (1, 2, 3, 4):
            parts = [part_of(count, r, size) for r in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == count
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


def test_global_batch_shards_make_up_the_single_process_batches():
    x = np.arange(50, dtype=np.float32)[:, None]
    data = Dataset({"x": x}, np.arange(50) % 3)
    single = list(data.batches(8, shuffle=True, rng=np.random.default_rng([0, 1])))
    ranks = [list(GlobalBatchShard(data, r, 3).batches(8, shuffle=True, rng=np.random.default_rng([0, 1])))
             for r in range(3)]
    assert all(len(r) == len(single) for r in ranks)
    for k, whole in enumerate(single):
        joined = {key: np.concatenate([r[k][key] for r in ranks]) for key in whole}
        np.testing.assert_array_equal(joined["x"], whole["x"])
        np.testing.assert_array_equal(joined["labels"], whole["labels"])
    assert len(GlobalBatchShard(data, 1, 3)) == 50  # schedules count global steps


def test_memory_mapped_arrays_stay_mapped_until_a_batch_is_taken(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(40, dtype=np.float32).reshape(20, 2))
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    part = GlobalBatchShard(Dataset({"x": mapped}), 1, 2)
    assert isinstance(part.arrays["x"], np.memmap)
    first = next(part.batches(10))
    np.testing.assert_array_equal(first["x"], np.arange(10, 20, dtype=np.float32).reshape(5, 2))


def test_a_callers_shard_runs_as_many_steps_as_the_global_data():
    mine = Dataset({"x": np.zeros((3, 1), np.float32)})
    batches = list(LocalShard(mine, 0, 2, global_count=10).batches(4))
    assert len(batches) == 3 and [len(b["x"]) for b in batches] == [2, 1, 0]


def test_sources_a_callable_is_asked_for_its_shard():
    class Two(Communicator):
        rank, size = 1, 2
    assert source_for("train.npz", Two()) == ("train.npz", False)
    assert source_for(lambda rank, size: [(rank, size)], Two()) == ([(1, 2)], True)
    assert source_for(lambda rank, size: [(rank, size)], Communicator()) == ([(0, 1)], False)


def test_one_process_communicator_changes_nothing():
    comm, data = Communicator(), Dataset({"x": np.zeros((4, 1), np.float32)})
    grads = [np.ones(3, np.float32)]
    assert comm.allreduce_mean(grads, weight=4, scalars=(0.5,)) == (0.5,)
    np.testing.assert_array_equal(grads[0], 1)
    assert comm.is_root and comm.mean(2.0) == 2.0 and shard(data, comm, 1) is data
    comm.check_same(b"anything")


def test_flat_buffer_packs_a_weighted_mean_in_place():
    grads = [np.full((2, 3), 2.0, np.float32), np.full(4, -1.0, np.float32)]
    flat = FlatBuffer(grads, n_scalars=1)
    flat.pack(grads, weight=3, scalars=(0.25,))
    other = np.concatenate([np.full(6, 4.0), np.full(4, 1.0), [0.5 * 1], [1]]).astype(np.float32)
    flat.data += other  # what a SUM all-reduce adds: a rank with one sample, gradients 4 and 1, loss 0.5
    views = [g for g in grads]
    (loss,), weight = flat.unpack(views)
    assert weight == 4 and loss == pytest.approx((0.25 * 3 + 0.5) / 4)
    np.testing.assert_allclose(grads[0], (2 * 3 + 4) / 4)
    np.testing.assert_allclose(grads[1], (-1 * 3 + 1) / 4)
    assert flat.fits(grads, 1) and not flat.fits(grads[:1], 1)


def test_checksum_sees_one_flipped_bit():
    params = {"a": np.ones(4, np.float32), "b": np.zeros(2, np.float32)}
    before = param_checksum(params)
    params["b"].view(np.uint32)[1] ^= 1
    assert param_checksum(params) != before


# --- mpirun -n 2 ------------------------------------------------------------------------------
def _mpi_missing():
    if shutil.which("mpirun") is None:
        return "mpirun is not installed (apt-get install openmpi-bin)"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'onnxoto[dist]')"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))

# A rank's program: prune through the Python API; the test's faults are injected around the loop's step.
DRIVER = textwrap.dedent('''
    import json, os, signal, sys
    import numpy as np
    from onnxoto.prune import PruneOptions, prune, loop
    from onnxoto.prune.loop import TrainingStopped
    from onnxoto.dist import launched_size

    args = json.loads(sys.argv[1])
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    fault, calls = args.get("fault"), [0]
    real_step = loop.train_step

    def step(*a, **k):
        calls[0] += 1
        if fault and calls[0] == fault["step"] and rank in fault["ranks"]:
            if fault["kind"] == "interrupt":
                raise KeyboardInterrupt
            os.kill(os.getpid(), getattr(signal, fault["kind"]))
        return real_step(*a, **k)

    loop.train_step = step
    # BatchNorm frozen in both: on batch statistics each rank would normalize by its own rows
    options = PruneOptions(epochs=args["epochs"], batch_size=args["batch"], seed=3, optimizer=args["optimizer"],
                           verify_batches=1, batchnorm="frozen")
    try:
        result = prune(args["model"], args["data"], args["output"], options=options, workdir=args["workdir"],
                       resume=args.get("resume", False), log=lambda line: None)
    except TrainingStopped as stopped:
        print(f"rank {rank}: {stopped}")
        sys.exit(0)
    if rank == 0:
        np.savez(args["output"] + ".keep.npz", **result.keep)
        with open(args["output"] + ".json", "w") as f:
            json.dump({"world": launched_size(), "verified": result.verified}, f)
''')


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    with np.load(TRAIN) as data:
        np.savez(folder / "train256.npz", **{k: v[:SAMPLES] for k, v in data.items()})
    (folder / "driver.py").write_text(DRIVER)
    return folder


def _run(folder, name, ranks, timeout=240, env=None, **args):
    out = folder / name
    out.mkdir(exist_ok=args.get("resume", False))
    args = {"model": MODEL, "data": str(folder / "train256.npz"), "output": str(out / "pruned.onnx"),
            "workdir": str(out / "work"), "epochs": 2, "batch": 64, "optimizer": "hesso", **args}
    command = [sys.executable, str(folder / "driver.py"), json.dumps(args)]
    if ranks > 1:
        command = ["mpirun", "-n", str(ranks), "--oversubscribe", "--allow-run-as-root"] + command
    environment = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                   "OMPI_MCA_rmaps_base_oversubscribe": "1", **(env or {})}
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)
    return done, out, time.monotonic() - started


def _weights(path):
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}


def _assert_same_result(a, b):
    keep_a, keep_b = np.load(a / "pruned.onnx.keep.npz"), np.load(b / "pruned.onnx.keep.npz")
    assert sorted(keep_a.files) == sorted(keep_b.files)
    for gid in keep_a.files:
        np.testing.assert_array_equal(keep_a[gid], keep_b[gid], err_msg=f"kept channels of {gid}")
    wa, wb = _weights(a / "pruned.onnx"), _weights(b / "pruned.onnx")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert wa[name].shape == wb[name].shape, name
        scale = max(float(np.abs(wa[name]).max()), 1e-12)
        assert float(np.abs(wa[name] - wb[name]).max()) / scale <= TOLERANCE, name


@needs_mpi
@pytest.mark.parametrize("optimizer", ["hesso", "hesso-cric"])
def test_two_ranks_prune_as_one_process_does(subset, optimizer):
    single, one, _ = _run(subset, f"single-{optimizer}", 1, optimizer=optimizer)
    assert single.returncode == 0, single.stderr[-3000:]
    pair, two, _ = _run(subset, f"mpi-{optimizer}", 2, optimizer=optimizer)
    assert pair.returncode == 0, pair.stdout[-2000:] + pair.stderr[-3000:]
    assert json.loads((two / "pruned.onnx.json").read_text()) == {"world": 2, "verified": True}
    _assert_same_result(one, two)
    # rank 0 alone wrote: one checkpoint and one artifacts folder in the shared work folder
    assert sorted(os.listdir(two / "work")) == ["artifacts", "checkpoint.npz"]


@needs_mpi
def test_an_interrupted_two_rank_run_resumes_to_the_uninterrupted_result(subset):
    single, one, _ = _run(subset, "single-resume", 1)
    assert single.returncode == 0, single.stderr[-3000:]
    fault = {"kind": "interrupt", "step": 6, "ranks": [0, 1]}  # in the second epoch (4 steps each)
    stopped, two, _ = _run(subset, "mpi-resume", 2, fault=fault)
    assert stopped.returncode == 0 and "interrupted: resume with --resume" in stopped.stdout, stopped.stderr[-3000:]
    assert not (two / "pruned.onnx").exists()
    done, again, _ = _run(subset, "mpi-resume", 2, resume=True)  # the same work folder, resumed
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    _assert_same_result(one, again)


@needs_mpi
@pytest.mark.parametrize("kind", ["SIGKILL", "SIGSTOP"])
def test_a_rank_that_dies_or_hangs_stops_the_run_with_a_message(subset, kind):
    fault = {"kind": kind, "step": 3, "ranks": [1]}
    done, out, seconds = _run(subset, f"fault-{kind}", 2, timeout=120, fault=fault,
                              env={"ONNXOTO_DIST_TIMEOUT": "10"})
    text = done.stdout + done.stderr
    assert done.returncode != 0, text[-3000:]
    assert seconds < 90
    assert not (out / "pruned.onnx").exists()
    if kind == "SIGSTOP":  # a hung rank: rank 0's deadline speaks
        assert "rank 0: gradient all-reduce" in text and "got no answer from the other ranks in 10 s" in text, text
    else:  # a dead rank: mpirun or the deadline names it
        assert "rank 1" in text or "got no answer" in text, text[-3000:]
