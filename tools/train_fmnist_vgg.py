"""Train a small VGG-style Fashion-MNIST classifier dense and write models/fmnist_vgg.onnx (benchmark model).

Run with a python that has torch and onnx (e.g. /work/venv-tools/bin/python):
    python tools/train_fmnist_vgg.py [--epochs 3] [--out models/fmnist_vgg.onnx]
Same input convention and training recipe as tools/train_fmnist.py (uint8 (N, 1, 28, 28) input, scaling
inside the graph, BatchNorm kept unfolded, AdamW one-cycle, random flips), on all 60k training images.

    Conv3x3-BN-ReLU x2 (24)   28x28, MaxPool
    Conv3x3-BN-ReLU x2 (48)   14x14, MaxPool
    Conv3x3-BN-ReLU x2 (96)    7x7
    GlobalAveragePool, Linear 96->64, ReLU, Linear 64->10
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fmnist  # noqa: E402
from train_fmnist import MEAN, STD, accuracy, export, train  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def conv_bn(cin, cout):
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class FmnistVgg(nn.Module):
    def __init__(self, widths=(24, 48, 96), hidden=64):
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(*conv_bn(1, w1), *conv_bn(w1, w1), nn.MaxPool2d(2),
                                      *conv_bn(w1, w2), *conv_bn(w2, w2), nn.MaxPool2d(2),
                                      *conv_bn(w2, w3), *conv_bn(w3, w3))
        self.classifier = nn.Sequential(nn.Linear(w3, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):
        x = (x.float() / 255.0 - MEAN) / STD
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--out", default=os.path.join(REPO, "models", "fmnist_vgg.onnx"))
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    xtr, ytr = fmnist.load("train")
    xte, yte = fmnist.load("t10k")
    model = FmnistVgg()
    print("params:", sum(p.numel() for p in model.parameters()), flush=True)
    t0 = time.time()
    train(model, xtr, ytr, args.epochs, args.batch, args.lr)
    minutes = (time.time() - t0) / 60
    acc = accuracy(model, xte, yte)
    print(f"trained {args.epochs} epochs on 60k in {minutes:.1f} min; torch test accuracy (10k): {acc:.4f}")
    export(model, args.out)
    print("wrote", args.out, os.path.getsize(args.out), "bytes")


if __name__ == "__main__":
    main()
