"""Benchmark: one training step in onnxruntime-training (onnxoto's TrainingSession, set up as `prune`
sets it up) against the same step in PyTorch, and the whole `prune` against its training steps alone.

    .venv-tools/bin/python tools/bench_train.py [--models resnet_fm,vgg] [--batch 128] [--threads 2]
        [--rounds 12] [--profile] [--prune resnet_fm] [--json bench/train.json]

Needs torch (tools only: `.venv-tools`, see README). The architectures are built in torch and exported
with the bundled model's exporter (tools/train_fmnist.py: legacy exporter, BatchNorm kept, uint8 input
scaled inside the graph); random weights and random Fashion-MNIST-shaped batches (N, 1, 28, 28).

1. Step: forward, backward (BatchNorm on batch statistics in both, as `prune` trains in one process)
   and SGD with momentum 0.9 over every parameter (torch.optim.SGD; onnxoto.optim.SGD on onnxruntime's
   buffers). Both frameworks get --threads threads and run in this process, one step each in turn
   (the order alternating by round), so that both see the same load; medians of --rounds steps, of wall
   time and of the process's CPU time (steadier on shared cores).
2. --profile: per-operator-kind milliseconds of one step in each framework (onnxruntime's session
   profiler, torch.profiler), medians over steps: which kernels the gap is made of.
3. --prune demo|MODEL: the whole `onnxoto prune` (training graph, teacher forwards, training, validation,
   recalibration, certificate, measuring) with the settings of `onnxoto demo` (by default all of them: 8 epochs
   at batch 64) on the bundled Fashion-MNIST data, against its training steps alone, as prune itself timed
   them (PruneResult.seconds).
"""
import argparse
import collections
import glob
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

# Threads that wait for work sleep in both frameworks (onnxoto's sessions set allow_spinning=0): on shared
# cores, spinning OpenMP workers made torch's step 2.6x slower (2706 vs 1023 ms, ResNet-FM, load 6 on 2 cores).
# Read by libgomp when torch loads it, so it is set before the import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import BasicBlock  # noqa: E402  (the zoo's ResNet block)
from train_fmnist import MEAN, STD, export  # noqa: E402
from train_fmnist_vgg import FmnistVgg  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LR = 0.01


class ResNetFM(nn.Module):
    """The Fashion-MNIST ResNet of the OTO comparison (696k params): a 32-channel stem and three
    stages of two basic blocks at 32, 64, 128 channels (28x28, 14x14, 7x7), then average pool and Linear."""

    def __init__(self, width=32, blocks_per_stage=2):
        super().__init__()
        blocks, cin = [], width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for k in range(blocks_per_stage):
                blocks.append(BasicBlock(cin, cout, 2 if stage and not k else 1))
                cin = cout
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, 10)

    def forward(self, x):
        x = (x.float() / 255.0 - MEAN) / STD
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


MODELS = {"resnet_fm": ResNetFM, "vgg": FmnistVgg}


def random_batch(batch, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (batch, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, batch).astype(np.int64)


class TorchStep:
    def __init__(self, model, x, y):
        self.model, self.x, self.y = model.train(), torch.from_numpy(x), torch.from_numpy(y)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)

    def __call__(self):
        self.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def ort_session(path, workdir, threads, profile_prefix=None):
    """A TrainingSession over the exported model, prepared exactly as `prune` prepares it (one process)."""
    from onnxoto import graph
    from onnxoto.train import TrainingSession, loss_for, prepare_for_training, trainable_params
    from onnxoto.train.forms import to_trainable

    dense = graph.load(path, strict=True)
    prepared, param_map = to_trainable(prepare_for_training(dense.proto, "batch"))
    trainable = [n for n in trainable_params(dense.proto) if int(np.prod(dense.shapes[n])) > 1]
    return TrainingSession(prepared, loss_for(dense.proto, kind="cross_entropy"), workdir=workdir,
                           requires_grad=param_map.training_params(trainable), batchnorm="batch",
                           threads=threads, profile_prefix=profile_prefix)


class OrtStep:
    def __init__(self, session, x, y):
        from onnxoto.optim import SGD

        self.session, self.inputs, self.y = session, {session.input_names[0]: x}, y
        self.sgd = SGD(lr=LR, momentum=0.9)

    def __call__(self):
        loss = self.session.train_step(self.inputs, self.y)
        for name, param in self.session.params.items():
            self.sgd.update(name, param, self.session.grads[name])
        return loss


def timed(step):
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def timed_cpu(step):
    """(wall seconds, CPU seconds of this process's threads) of one step. On shared cores the CPU time is the
    steadier measure of a framework's own work: a preempted thread accrues none."""
    w0, c0 = time.perf_counter(), time.process_time()
    step()
    return time.perf_counter() - w0, time.process_time() - c0


def exported(name, batch, work):
    """(the torch model, its ONNX export, a random batch of inputs and labels)."""
    torch.manual_seed(0)
    model = MODELS[name]()
    path = os.path.join(work, f"{name}.onnx")
    export(model, path)
    return (model, path, *random_batch(batch, seed=1))


def bench_steps(name, batch, threads, rounds, work):
    model, path, x, y = exported(name, batch, work)
    with ort_session(path, os.path.join(work, f"{name}_artifacts"), threads) as session:
        steps = {"torch": TorchStep(model, x, y), "onnxruntime": OrtStep(session, x, y)}
        for step in steps.values():  # warm-up: allocations, first-run kernel choices
            step(), step()
        times = {k: [] for k in steps}
        for r in range(rounds):
            for k in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
                times[k].append(timed_cpu(steps[k]))
    wall = {k: statistics.median(w for w, _ in v) * 1e3 for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) * 1e3 for k, v in times.items()}
    row = {"model": name, "params": sum(p.numel() for p in model.parameters()), "batch": batch, "threads": threads,
           "rounds": rounds, "torch_ms": wall["torch"], "ort_ms": wall["onnxruntime"],
           "ratio": wall["onnxruntime"] / wall["torch"], "torch_cpu_ms": cpu["torch"], "ort_cpu_ms": cpu["onnxruntime"],
           "cpu_ratio": cpu["onnxruntime"] / cpu["torch"],
           "torch_ms_all": [w * 1e3 for w, _ in times["torch"]],
           "ort_ms_all": [w * 1e3 for w, _ in times["onnxruntime"]]}
    print(f"{name:10s} {row['params']:>8,d} params  wall: torch {row['torch_ms']:7.1f} ms  onnxruntime "
          f"{row['ort_ms']:7.1f} ms  ratio {row['ratio']:.2f}   CPU: torch {row['torch_cpu_ms']:7.1f} ms  "
          f"onnxruntime {row['ort_cpu_ms']:7.1f} ms  ratio {row['cpu_ratio']:.2f}", flush=True)
    return row


# -- 2. per-operator profile -----------------------------------------------------------------------

KINDS = [  # (kind, onnxruntime op types, torch op names (aten::)); the rest is "other"
    ("conv forward", {"Conv"}, {"mkldnn_convolution", "_convolution", "convolution", "conv2d"}),
    ("conv backward", {"ConvGrad"}, {"convolution_backward"}),
    ("batchnorm forward", {"BatchNormInternal", "BatchNormalization"}, {"native_batch_norm", "_batch_norm_impl_index"}),
    ("batchnorm backward", {"BatchNormalizationGrad"}, {"native_batch_norm_backward"}),
    # onnxoto trains Relu as x * (x > 0): its backward is one of the Muls
    ("relu (both ways)", {"Relu", "ReluGrad", "Greater", "Cast", "Mul"}, {"relu", "clamp_min", "threshold_backward"}),
    ("pooling (both ways)", {"MaxPool", "MaxPoolGrad", "GlobalAveragePool", "GlobalAveragePoolGrad"},
     {"max_pool2d_with_indices", "max_pool2d_with_indices_backward", "adaptive_avg_pool2d", "mean",
      "_adaptive_avg_pool2d", "_adaptive_avg_pool2d_backward"}),
    ("residual add", {"Add", "Sum"}, {"add"}),
]
STEP = "whole step"  # wall time: onnxruntime's includes the Python around the run and the SGD update
RUN = "session run"  # onnxruntime's run alone (model_run in its profile)


def kind_of(op, framework):
    for kind, ort_ops, torch_ops in KINDS:
        if op in (ort_ops if framework == "onnxruntime" else torch_ops):
            return kind
    return "other"


def torch_kinds(step):
    """ms of each kind in one torch step (self CPU time of aten ops, torch.profiler), and the step's wall ms."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall = timed(step) * 1e3
    kinds = collections.defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            kinds[kind_of(event.key[len("aten::"):], "torch")] += event.self_cpu_time_total / 1e3
    kinds[STEP] = wall
    return kinds


def ort_kinds(profile_file, skip):
    """ms of each kind per session run in onnxruntime's profile (kernel times), after `skip` warm-up runs."""
    events = json.load(open(profile_file))
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][skip:]
    per_run = [collections.defaultdict(float) for _ in runs]
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            for k, run in enumerate(runs):
                if run["ts"] <= e["ts"] <= run["ts"] + run["dur"]:
                    per_run[k][kind_of(e["args"]["op_name"], "onnxruntime")] += e["dur"] / 1e3
    for run, kinds in zip(runs, per_run):
        kinds[RUN] = run["dur"] / 1e3
    return per_run


def _medians(rows):
    keys = {k for row in rows for k in row}
    return {k: statistics.median(row.get(k, 0.0) for row in rows) for k in keys}


def bench_profile(name, batch, threads, steps, work):
    """Both profilers on, one step of each framework in turn: medians per kind."""
    model, path, x, y = exported(name, batch, work)
    prefix = os.path.join(work, f"{name}_ort_profile")
    torch_step, torch_rows, ort_walls, warm = TorchStep(model, x, y), [], [], 2
    with ort_session(path, os.path.join(work, f"{name}_profile_artifacts"), threads, prefix) as session:
        ort_step = OrtStep(session, x, y)
        for _ in range(warm):
            ort_step(), torch_step()
        for _ in range(steps):
            ort_walls.append(timed(ort_step) * 1e3)
            torch_rows.append(torch_kinds(torch_step))
    ort_rows = ort_kinds(sorted(glob.glob(prefix + "*.json"))[-1], warm)
    for row, wall in zip(ort_rows, ort_walls):
        row[STEP] = wall
    ort_table, torch_table = _medians(ort_rows), _medians(torch_rows)
    rows = []
    print(f"{name}: ms per step by kind (median of {steps}, profilers on)\n  {'kind':22s} {'torch':>8s} "
          f"{'onnxruntime':>12s} {'gap':>8s}")
    for kind in [k for k, _, _ in KINDS] + ["other", RUN, STEP]:
        t, o = torch_table.get(kind, 0.0), ort_table.get(kind, 0.0)
        rows.append({"kind": kind, "torch_ms": t, "ort_ms": o, "gap_ms": o - t})
        print(f"  {kind:22s} {t:8.1f} {o:12.1f} {o - t:+8.1f}")
    return {"model": name, "batch": batch, "threads": threads, "steps": steps, "kinds": rows}


# -- 3. the whole prune against its steps ----------------------------------------------------------

_PRUNE = """
import json, sys
from onnxoto.cli import DEMO
from onnxoto.prune import PruneOptions, prune
model, train, val, output, epochs, batch = sys.argv[1:7]
options = PruneOptions(**{**DEMO, "epochs": int(epochs), "batch_size": int(batch)})
result = prune(model, train, output=output, val=val, options=options, log=lambda line: None)
print(json.dumps({"seconds": result.seconds, "verified": result.verified}))
"""


def bench_prune(name, epochs, batch, work, python):
    """`onnxoto prune` with the demo's settings on the bundled Fashion-MNIST data (10k training images, the
    2k test images as --val; `name` demo: the bundled model, which makes this `onnxoto demo`), run by
    `python` (the project's environment, without torch: where torch is
    installed, onnxruntime's training build imports it in every artifact-building child): its wall time
    against the time its own training steps took (PruneResult.seconds: session.train_step and the HESSO
    step; batch assembly and everything else count as overhead)."""
    import subprocess

    if name == "demo":
        path = os.path.join(REPO, "onnxoto", "data", "fmnist_resnet.onnx")
    else:
        torch.manual_seed(0)
        path = os.path.join(work, f"{name}_prune.onnx")
        export(MODELS[name](), path)
    data = os.path.join(REPO, "onnxoto", "data")
    done = subprocess.run([python, "-c", _PRUNE, path, os.path.join(data, "fmnist_train.npz"),
                           os.path.join(data, "fmnist_test.npz"), os.path.join(work, f"{name}_pruned.onnx"),
                           str(epochs), str(batch)], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    seconds = result["seconds"]
    row = {"model": name, "epochs": epochs, "batch": batch, "prune_s": seconds["total"],
           "steps_s": seconds["training steps"], "ratio": seconds["total"] / seconds["training steps"],
           "phases_s": seconds, "verified": result["verified"]}
    print(f"prune {name} ({epochs} epochs, batch {batch}): whole prune {row['prune_s']:.1f} s, its training steps "
          f"{row['steps_s']:.1f} s, ratio {row['ratio']:.2f}")
    for phase, value in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {phase:26s} {value:7.1f} s")
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet_fm,vgg")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--prune", default=None, help="demo (the bundled model) or a model name: also time the whole "
                                                  "prune against its training steps")
    ap.add_argument("--prune-epochs", type=int, default=8, help="8 and --prune-batch 64: `onnxoto demo` itself")
    ap.add_argument("--prune-batch", type=int, default=64)
    ap.add_argument("--prune-python", default=os.path.join(REPO, ".venv", "bin", "python"),
                    help="the python that runs prune (the project's environment, without torch)")
    ap.add_argument("--json", default=os.path.join(REPO, "bench", "train.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    out = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, shared with other jobs",
           "torch": torch.__version__, "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
           "load_average_start": os.getloadavg()[0], "steps": [], "profiles": []}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as work:
        for name in [m for m in args.models.split(",") if m]:
            out["steps"].append(bench_steps(name, args.batch, args.threads, args.rounds, work))
        if args.profile:
            for name in [m for m in args.models.split(",") if m]:
                out["profiles"].append(bench_profile(name, args.batch, args.threads, args.profile_steps, work))
        if args.prune:
            out["prune"] = bench_prune(args.prune, args.prune_epochs, args.prune_batch, work, args.prune_python)
    out["load_average_end"] = os.getloadavg()[0]
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", args.json)


if __name__ == "__main__":
    main()
