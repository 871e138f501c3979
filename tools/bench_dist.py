"""Data-parallel training throughput: samples/s of forward/backward + gradient all-reduce + SGD step on the
bundled Fashion-MNIST ResNet for 1 and 2 MPI ranks at the same global batch, and the all-reduce's share
of a step. Prints a table and writes JSON.

    python tools/bench_dist.py [--batch 64] [--steps 40] [--ranks 1 2] [--json bench_dist.json]

On one machine the ranks share its cores (2 here): 2 ranks cannot beat 1 by more than what one process
leaves idle; the number that carries over to several machines is the all-reduce's share.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "onnxoto", "data", "fmnist_resnet.onnx")
DATA = os.path.join(ROOT, "onnxoto", "data", "fmnist_train.npz")


def worker(batch, steps, warmup, out):
    """One rank: its share of each global batch, the fused all-reduce, an SGD step; rank 0 writes timings."""
    from onnxoto import graph
    from onnxoto.dist import communicator, shard
    from onnxoto.optim import SGD
    from onnxoto.train import TrainingSession, load_data, loss_for, prepare_for_training, trainable_params

    comm = communicator()
    model = graph.load(MODEL, strict=True)
    data = shard(load_data(DATA, model.proto), comm, batch)
    trainable = [n for n in trainable_params(model.proto) if int(np.prod(model.shapes[n])) > 1]
    with TrainingSession(prepare_for_training(model.proto), loss_for(model.proto, labels=data.labels),
                         requires_grad=trainable) as session:
        sgd = SGD(lr=0.01, momentum=0.9)
        batches = data.batches(batch, shuffle=True, rng=np.random.default_rng(0))
        step_s, reduce_s = [], []
        for k in range(warmup + steps):
            part = next(batches)
            started = time.perf_counter()
            session.train_step({session.input_names[0]: part[session.input_names[0]]}, part["labels"])
            reduced = time.perf_counter()
            comm.allreduce_mean(session.grads.values(), weight=len(part["labels"]), scalars=(0.0,))
            reduce_done = time.perf_counter()
            for name, param in session.params.items():
                sgd.update(name, param, session.grads[name])
            if k >= warmup:
                step_s.append(time.perf_counter() - started)
                reduce_s.append(reduce_done - reduced)
        grad_bytes = sum(int(g.nbytes) for g in session.grads.values())
    if comm.is_root:
        step, reduce = float(np.median(step_s)), float(np.median(reduce_s))
        with open(out, "w") as f:
            json.dump({"ranks": comm.size, "global_batch": batch, "step_ms": 1e3 * step,
                       "allreduce_ms": 1e3 * reduce, "allreduce_share": reduce / step,
                       "samples_per_s": batch / step, "gradient_bytes": grad_bytes}, f)
    comm.close()


def launch(ranks, batch, steps, warmup, folder):
    out = os.path.join(folder, f"ranks{ranks}.json")
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--batch", str(batch), "--steps", str(steps),
               "--warmup", str(warmup), "--out", out]
    if ranks > 1:
        command = ["mpirun", "-n", str(ranks), "--oversubscribe", "--allow-run-as-root", "--bind-to", "none"] + command
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    subprocess.run(command, check=True, env=env)
    with open(out) as f:
        return json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="runs per rank count; the median run is kept")
    parser.add_argument("--json", default="bench_dist.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.batch, args.steps, args.warmup, args.out)
    if max(args.ranks) > 1 and shutil.which("mpirun") is None:
        sys.exit("mpirun not found: apt-get install openmpi-bin, pip install mpi4py")
    folder = tempfile.mkdtemp(prefix="bench-dist-")
    rows = []
    try:
        for ranks in args.ranks:
            runs = sorted((launch(ranks, args.batch, args.steps, args.warmup, folder) for _ in range(args.repeats)),
                          key=lambda r: r["step_ms"])
            rows.append(runs[len(runs) // 2])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    base = rows[0]["samples_per_s"]
    print(f"global batch {args.batch}, {os.cpu_count()} cores shared by all ranks; step = forward/backward + "
          "all-reduce + SGD")
    print(f"{'ranks':>5}  {'step ms':>8}  {'samples/s':>9}  {'vs 1':>5}  {'all-reduce ms':>13}  {'share':>6}")
    for r in rows:
        print(f"{r['ranks']:>5}  {r['step_ms']:>8.2f}  {r['samples_per_s']:>9.0f}  {r['samples_per_s'] / base:>5.2f}  "
              f"{r['allreduce_ms']:>13.3f}  {100 * r['allreduce_share']:>5.1f}%")
    with open(args.json, "w") as f:
        json.dump({"cores": os.cpu_count(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
