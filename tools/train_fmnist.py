"""Train the bundled Fashion-MNIST demo model and write onnxoto/data/.

Run with a python that has torch and onnx (e.g. /work/venv-tools/bin/python):
    python tools/train_fmnist.py [--epochs 6] [--out onnxoto/data]
Needs the IDX files of the Debian package dataset-fashion-mnist (see tools/fmnist.py).
Writes fmnist_resnet.onnx (uint8 input, BatchNorm kept, inference mode),
fmnist_train.npz (10,000 stratified training images) and fmnist_test.npz (2,000 test
images), then measures accuracy with onnxruntime through tools/check_models.py.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
import onnx
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fmnist  # noqa: E402
from make_models import BasicBlock  # noqa: E402  (the zoo's ResNet block)

MEAN, STD = 0.2860, 0.3530  # of the training images, in [0, 1]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FmnistResNet(nn.Module):
    """uint8 (N, 1, 28, 28) -> logits (N, 10); scaling to [0, 1] and normalizing happen inside."""

    def __init__(self, widths=(16, 32, 64)):
        super().__init__()
        w1, w2, w3 = widths
        self.stem = nn.Sequential(nn.Conv2d(1, w1, 3, 1, 1, bias=False), nn.BatchNorm2d(w1), nn.ReLU())
        self.blocks = nn.Sequential(BasicBlock(w1, w1, 1),      # 28x28
                                    BasicBlock(w1, w2, 2),      # 14x14
                                    BasicBlock(w2, w2, 1),
                                    BasicBlock(w2, w3, 2))      # 7x7
        self.fc = nn.Linear(w3, 10)

    def forward(self, x):
        x = (x.float() / 255.0 - MEAN) / STD
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def stratified(labels, per_class, seed):
    """Indices of per_class samples of each class, sorted, chosen with a fixed seed."""
    rng = np.random.default_rng(seed)
    idx = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(idx))


def train(model, x, y, epochs, batch, lr):
    x = torch.from_numpy(x[:, None].copy())
    y = torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        model.train()
        t0, total, correct = time.time(), 0.0, 0
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            j = perm[i:i + batch]
            xb, yb = x[j], y[j]
            flip = torch.rand(len(xb), generator=gen) < 0.5  # clothes are mirror-symmetric
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(j)
            correct += int((logits.argmax(1) == yb).sum())
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}, train acc {correct / len(x):.4f}, "
              f"{time.time() - t0:.0f} s", flush=True)


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    pred = torch.cat([model(torch.from_numpy(x[i:i + 1000, None].copy())).argmax(1) for i in range(0, len(x), 1000)])
    return float((pred.numpy() == y).mean())


def export(model, path):
    """Legacy exporter, BatchNorm kept as BatchNormalization nodes in inference mode."""
    model.eval()
    dummy = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    # do_constant_folding=False keeps BN unfolded; it also leaves the Cast/Div/Sub/Div preamble as is.
    torch.onnx.export(model, (dummy,), path, dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
                      do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL)
    m = onnx.load(path)
    assert m.ir_version <= 10, m.ir_version
    ops = [n.op_type for n in m.graph.node]
    assert "BatchNormalization" in ops, "BatchNorm was folded"
    onnx.checker.check_model(m, full_check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--out", default=os.path.join(REPO, "onnxoto", "data"))
    ap.add_argument("--check-python", default="/work/venv/bin/python",
                    help="python with onnxruntime, used to measure the exported file's accuracy")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    xtr, ytr = fmnist.load("train")
    xte, yte = fmnist.load("t10k")
    model = FmnistResNet()
    print("params:", sum(p.numel() for p in model.parameters()))
    train(model, xtr, ytr, args.epochs, args.batch, args.lr)
    print(f"torch test accuracy (10k): {accuracy(model, xte, yte):.4f}")

    os.makedirs(args.out, exist_ok=True)
    export(model, os.path.join(args.out, "fmnist_resnet.onnx"))
    itr, ite = stratified(ytr, 1000, seed=1), stratified(yte, 200, seed=2)
    np.savez_compressed(os.path.join(args.out, "fmnist_train.npz"), x=xtr[itr, None], labels=ytr[itr])
    np.savez_compressed(os.path.join(args.out, "fmnist_test.npz"), x=xte[ite, None], labels=yte[ite])
    np.save("/tmp/fmnist_test_full_x.npy", xte[:, None])
    np.save("/tmp/fmnist_test_full_y.npy", yte)
    if args.check_python and os.path.exists(args.check_python):
        subprocess.run([args.check_python, os.path.join(REPO, "tools", "check_models.py"), "fmnist", args.out,
                        "/tmp/fmnist_test_full_x.npy", "/tmp/fmnist_test_full_y.npy"], check=True)


if __name__ == "__main__":
    main()
