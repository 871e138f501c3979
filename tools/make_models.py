"""Build the model zoo: small PyTorch models exported to models/*.onnx.

Run with a python that has torch, onnx and onnxscript (e.g. /work/venv-tools/bin/python):
    python tools/make_models.py [--only resnet,vgg] [--no-check]
Each architecture is exported with the legacy TorchScript exporter (<arch>.onnx) and
with the dynamo exporter (<arch>_dynamo.onnx) where that works; failures are printed
and listed in models/README.md. Weights are random but deterministic (one seed per
model) and BatchNorm/LayerNorm parameters and running statistics are randomized, so
that every channel matters. Torch outputs on a fixed random input are saved beside
the run (REF_DIR) and tools/check_models.py compares onnxruntime against them.
"""
import argparse
import logging
import math
import os
import subprocess
import sys
import traceback
import warnings

import numpy as np
import onnx
import torch
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "models")
REF_DIR = os.environ.get("ONNXOTO_ZOO_REF", "/tmp/onnxoto_zoo_ref")
OPSET = 17
MAX_OPSET, MAX_IR = 21, 10  # what onnxruntime-training 1.19 accepts


# ---------------------------------------------------------------- architectures

def conv_bn_relu(cin, cout, k=3, s=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class VGG(nn.Module):
    """Conv+BN+ReLU stacks with MaxPool; Flatten (64x4x4) into a two-layer Linear head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(conv_bn_relu(3, 16), conv_bn_relu(16, 16), nn.MaxPool2d(2),
                                      conv_bn_relu(16, 32), nn.MaxPool2d(2),
                                      conv_bn_relu(32, 64), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """Basic blocks; identity shortcut at 16, 1x1 stride-2 downsample shortcuts to 32 and 64."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(3, 16)
        self.blocks = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
            InvertedResidual(16, 16, 1, 1),   # no expansion, residual
            InvertedResidual(16, 24, 2, 4),
            InvertedResidual(24, 24, 1, 4),   # residual
            InvertedResidual(24, 32, 2, 4),
            nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6())
        self.classifier = nn.Linear(64, 10)

    def forward(self, x):
        return self.classifier(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class DenseLayer(nn.Module):
    """Pre-activation BN-ReLU-Conv1x1-BN-ReLU-Conv3x3; its k new channels are concatenated."""

    def __init__(self, cin, growth):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * growth, 1, bias=False),
                                  nn.BatchNorm2d(4 * growth), nn.ReLU(),
                                  nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


class DenseNet(nn.Module):
    def __init__(self, growth=8):
        super().__init__()
        c = 16
        layers = [nn.Conv2d(3, c, 3, 1, 1, bias=False)]
        for i, n in enumerate((3, 3)):
            for _ in range(n):
                layers.append(DenseLayer(c, growth))
                c += growth
            if i == 0:  # transition: BN-ReLU-Conv1x1 (halve channels)-AvgPool
                layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2)]
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        return self.fc(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class SqueezeExcite(nn.Module):
    """GlobalAveragePool -> Linear -> ReLU -> Linear -> Sigmoid -> channel-wise Mul."""

    def __init__(self, c, reduction=4):
        super().__init__()
        self.fc1 = nn.Linear(c, c // reduction)
        self.fc2 = nn.Linear(c // reduction, c)

    def forward(self, x):
        s = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
        return x * s[:, :, None, None]


class SENet(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(conv_bn_relu(3, 16), conv_bn_relu(16, 32, s=2), SqueezeExcite(32))
        self.block2 = nn.Sequential(conv_bn_relu(32, 32), SqueezeExcite(32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.block1(x)
        x = x + self.block2(x)  # SE inside a residual branch, as in SE-ResNet
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


class UNet(nn.Module):
    """Two levels down (MaxPool), two up (ConvTranspose 2x2 stride 2) with skip Concat; image out."""

    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(conv_bn_relu(3, 16), conv_bn_relu(16, 16))
        self.enc2 = nn.Sequential(conv_bn_relu(16, 32), conv_bn_relu(32, 32))
        self.mid = nn.Sequential(conv_bn_relu(32, 64), conv_bn_relu(64, 64))
        self.up2 = nn.ConvTranspose2d(64, 32, 2, 2)
        self.dec2 = nn.Sequential(conv_bn_relu(64, 32), conv_bn_relu(32, 32))
        self.up1 = nn.ConvTranspose2d(32, 16, 2, 2)
        self.dec1 = nn.Sequential(conv_bn_relu(32, 16), conv_bn_relu(16, 16))
        self.out = nn.Conv2d(16, 3, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
        m = self.mid(nn.functional.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.out(d1)


class Attention(nn.Module):
    """Multi-head self-attention by hand: heads appear only through Reshape/Transpose."""

    def __init__(self, d, heads):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        n, s, d = x.shape

        def heads(t):
            return t.reshape(n, s, self.h, self.dh).transpose(1, 2)  # (N, H, S, dh)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.dh), dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(n, s, d))


class EncoderLayer(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(d), Attention(d, heads)
        self.ln2 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class Transformer(nn.Module):
    """int64 tokens (N, S<=16) -> logits (N, 10): embedding + learned positions, 2 pre-LN layers, mean pool."""

    def __init__(self, vocab=100, d=32, heads=4, ff=64, max_len=16, layers=2, torch_layer=False):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, max_len, d) * 0.5)
        if torch_layer:
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True) for _ in range(layers))
        else:
            self.layers = nn.ModuleList(EncoderLayer(d, heads, ff) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        h = self.embed(x) + self.pos[:, :x.shape[1]]
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h).mean(1))


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, to channels-last, LayerNorm, Linear 4x, GELU, Linear, layer scale, back, residual."""

    def __init__(self, c):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, 1, 3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pw1, self.pw2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pw2(nn.functional.gelu(self.pw1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class ChannelsFirstLayerNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = nn.LayerNorm(c)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 4, 4), ChannelsFirstLayerNorm(32))  # patchify to 8x8
        self.stage1 = nn.Sequential(ConvNeXtBlock(32), ConvNeXtBlock(32))
        self.down = nn.Sequential(ChannelsFirstLayerNorm(32), nn.Conv2d(32, 64, 2, 2))
        self.stage2 = ConvNeXtBlock(64)
        self.norm = nn.LayerNorm(64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean((2, 3))))


class ConvBnSiLU(nn.Module):
    """YOLOv8's Conv: Conv2d + BN + SiLU."""

    def __init__(self, cin, cout, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return nn.functional.silu(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c, shortcut=True):
        super().__init__()
        self.cv1, self.cv2 = ConvBnSiLU(c, c, 3), ConvBnSiLU(c, c, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """cv1 to 2c channels, split in halves, chain n bottlenecks off the second half, concat all, cv2."""

    def __init__(self, cin, cout, n=1, shortcut=True, use_split=False):
        super().__init__()
        self.c = cout // 2
        self.cv1 = ConvBnSiLU(cin, 2 * self.c, 1)
        self.cv2 = ConvBnSiLU((2 + n) * self.c, cout, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))
        self.use_split = use_split

    def forward(self, x):
        if self.use_split:  # ultralytics' forward_split
            y = list(self.cv1(x).split((self.c, self.c), 1))
        else:
            y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class C2fNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(ConvBnSiLU(3, 16, 3, 2), ConvBnSiLU(16, 32, 3, 2), C2f(32, 32, n=2),
                                      ConvBnSiLU(32, 64, 3, 2), C2f(64, 64, n=1, shortcut=False, use_split=True))
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(nn.functional.adaptive_avg_pool2d(self.backbone(x), 1).flatten(1))


# ---------------------------------------------------------------- zoo table

IMAGE = ("image", (3, 32, 32))
TOKENS = ("tokens", (16,))

# name -> (constructor, input kind, seed)
ZOO = {
    "vgg": (VGG, IMAGE, 1),
    "resnet": (ResNet, IMAGE, 2),
    "mobilenetv2": (MobileNetV2, IMAGE, 3),
    "densenet": (DenseNet, IMAGE, 4),
    "se": (SENet, IMAGE, 5),
    "unet": (UNet, IMAGE, 6),
    "transformer": (Transformer, TOKENS, 7),
    "transformer_nnlayer": (lambda: Transformer(torch_layer=True), TOKENS, 8),
    "convnext": (ConvNeXt, IMAGE, 9),
    "c2f": (C2fNet, IMAGE, 10),
}


def randomize(model, seed):
    """Non-trivial norm parameters, running statistics and biases so that every channel matters."""
    g = torch.Generator().manual_seed(seed + 1000)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    def normal(t, std):
        t.copy_(torch.randn(t.shape, generator=g) * std)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                uniform(m.weight, 0.5, 1.5)
                normal(m.bias, 0.2)
                normal(m.running_mean, 0.2)
                uniform(m.running_var, 0.5, 1.5)
            elif isinstance(m, nn.LayerNorm):
                uniform(m.weight, 0.5, 1.5)
                normal(m.bias, 0.1)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and m.bias is not None:
                normal(m.bias, 0.1)


def build(name, randomized=True):
    ctor, _, seed = ZOO[name]
    torch.manual_seed(seed)
    model = ctor()
    if randomized:
        randomize(model, seed)
    return model.eval()


def example_input(name, batch, seed):
    kind, shape = ZOO[name][1]
    g = torch.Generator().manual_seed(seed)
    if kind == "tokens":
        return torch.randint(0, 100, (batch,) + shape, generator=g, dtype=torch.int64)
    return torch.randn((batch,) + shape, generator=g)


# ---------------------------------------------------------------- export

def dynamic_axes(name):
    # The legacy export of nn.MultiheadAttention bakes the traced sequence length into a
    # Reshape, so declaring S dynamic there would be a lie: that one keeps S = 16.
    if ZOO[name][1][0] == "tokens" and name != "transformer_nnlayer":
        return {"x": {0: "N", 1: "S"}, "y": {0: "N"}}
    return {"x": {0: "N"}, "y": {0: "N"}}


def export_legacy(model, name, path, fold_bn=True):
    x = example_input(name, 2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=OPSET, input_names=["x"],
                          output_names=["y"], dynamic_axes=dynamic_axes(name),
                          do_constant_folding=fold_bn, training=torch.onnx.TrainingMode.EVAL)


def export_dynamo(model, name, path):
    x = example_input(name, 2, seed=0)
    dims = {0: torch.export.Dim("N", min=1, max=1024)}
    if ZOO[name][1][0] == "tokens":
        dims[1] = torch.export.Dim("S", min=2, max=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, input_names=["x"],
                                    output_names=["y"], dynamic_shapes=(dims,), verbose=False)
    program.save(path)
    bring_down(path)


def bring_down(path):
    """Make a file loadable by onnxruntime-training 1.19: opset <= 21, IR <= 10, no external data.

    Also drops the per-node stack traces the dynamo exporter records (absolute paths, line
    numbers): they double the file size and make every regeneration a diff.
    """
    onnx.save(brought_down(onnx.load(path)), path)
    if os.path.exists(path + ".data"):
        os.remove(path + ".data")


def brought_down(m):
    """`m` without per-node stack traces, at opset <= 21 and IR <= 10."""
    for node in m.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    opset = max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    if opset > MAX_OPSET:
        m = onnx.version_converter.convert_version(m, MAX_OPSET)
    m.ir_version = min(m.ir_version, MAX_IR)
    return m


def save_reference(model, name, stem):
    """Torch outputs on a fixed batch of 3, for tools/check_models.py."""
    os.makedirs(REF_DIR, exist_ok=True)
    x = example_input(name, 3, seed=123)
    with torch.no_grad():
        y = model(x)
    np.savez(os.path.join(REF_DIR, stem + ".npz"), x=x.numpy(), y=y.numpy())


def exports_of(name):
    """(file stem, export function, randomize?) for one architecture."""
    legacy_bn = lambda m, n, p: export_legacy(m, n, p, fold_bn=False)  # noqa: E731
    jobs = [(name, export_legacy, True)]
    if name == "vgg":
        jobs = [("vgg_bnfolded", export_legacy, True), ("vgg_bn", legacy_bn, True)]
    if name in ("resnet", "mobilenetv2"):
        jobs.append((name + "_bn", legacy_bn, True))
    if name == "resnet":
        # PyTorch's default init (BN weight 1, bias 0, stats 0/1): BN folding leaves all-zero conv
        # biases, and the exporter stores each distinct one once, shared through Identity nodes.
        jobs.append(("resnet_sharedbias", export_legacy, False))
    return jobs + [(name + "_dynamo", export_dynamo, True)]


def export_all(names):
    os.makedirs(MODELS, exist_ok=True)
    failures, stems = {}, []
    for name in names:
        for stem, fn, randomized in exports_of(name):
            model = build(name, randomized)
            path = os.path.join(MODELS, stem + ".onnx")
            try:
                fn(model, name, path)
                save_reference(model, name, stem)
                stems.append(stem)
                print(f"exported {stem}.onnx ({os.path.getsize(path) / 1024:.0f} KiB)", flush=True)
            except Exception as e:  # an exporter failure is a result to record, not a crash
                failures[stem] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
                print(f"FAILED {stem}: {failures[stem]}", flush=True)
                if os.environ.get("ONNXOTO_ZOO_TRACEBACK"):
                    traceback.print_exc()
                for p in (path, path + ".data", os.path.join(REF_DIR, stem + ".npz")):
                    if os.path.exists(p):
                        os.remove(p)
    return stems, failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="comma-separated architectures (default: all)")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--check-python", default="/work/venv/bin/python",
                    help="python with onnxruntime for tools/check_models.py")
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" noise
    names = [n for n in args.only.split(",") if n] or list(ZOO)
    stems, failures = export_all(names)
    print("\nexport failures:" if failures else "\nno export failures")
    for stem, why in failures.items():
        print(f"  {stem}: {why}")
    if not args.no_check:
        subprocess.run([args.check_python, os.path.join(REPO, "tools", "check_models.py"), "zoo", *stems],
                       check=True)


if __name__ == "__main__":
    main()
