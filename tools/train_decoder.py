"""A small Llama-style decoder trained on real text that ships in a package, for the perplexity benchmark
of `onnxoto prune` on token ids (README "Decoders").

The text: Debian's `fortunes` package (fortune-mod's data files, English, ~1.4 MB), extracted with
    apt-get download fortunes && dpkg -x fortunes_*.deb /tmp/fortunes
Fortunes are split at the `%` lines; every 10th is held out. Tokens are UTF-8 bytes (vocabulary 256).

    python tools/train_decoder.py train --corpus /tmp/fortunes/usr/share/games/fortunes --out /tmp/dec
        -> decoder_fortunes.onnx (TorchScript export, input_ids (N, S) -> logits), train.npz (input_ids
           windows for `prune`), heldout.npz
    python tools/train_decoder.py ppl MODEL.onnx /tmp/dec/heldout.npz     (needs onnxruntime only)
    python tools/train_decoder.py data --corpus ... --out /tmp/dec --rows 4096   (more windows for prune)
    python tools/train_decoder.py bench /tmp/dec [--target-sparsity 0.3 --epochs 3 ...]
        -> `onnxoto prune` of decoder_fortunes.onnx on train.npz (distillation), the held-out perplexity
           before and after, what was cut per kind of group; JSON to bench/decoder_fortunes.json

Run `train` with a python that has torch and transformers (/work/wt/torchenv); `ppl` with onnxoto's.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

SEQ = 64
SIZES = dict(hidden=96, layers=2, heads=8, kv_heads=2, intermediate=256, vocab=256)
SKIP = {"ascii-art", "art"}  # pictures drawn in characters, not text


def fortunes(folder):
    """Every fortune of the package's data files (not the .dat indexes or the .u8 links), in file order."""
    out = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name in SKIP or "." in name or not os.path.isfile(path) or os.path.islink(path):
            continue
        text = open(path, encoding="utf-8", errors="replace").read()
        out += [f.strip("\n") for f in text.split("\n%\n") if f.strip()]
    return out


def split(folder):
    """(train bytes, held-out bytes): every 10th fortune held out; fortunes joined by '\\n%\\n'."""
    items = fortunes(folder)
    held = [f for k, f in enumerate(items) if k % 10 == 0]
    train = [f for k, f in enumerate(items) if k % 10 != 0]
    encode = lambda parts: np.frombuffer("\n%\n".join(parts).encode("utf-8"), np.uint8).astype(np.int64)
    return encode(train), encode(held)


def windows(tokens, rows, seq, rng=None):
    """`rows` windows of `seq` tokens: random starts (rng) or consecutive, non-overlapping ones."""
    if rng is None:
        rows = min(rows, len(tokens) // seq)
        return tokens[:rows * seq].reshape(rows, seq)
    starts = rng.integers(0, len(tokens) - seq - 1, rows)
    return np.stack([tokens[s:s + seq] for s in starts])


def perplexity(model_path, data_path, batch=64):
    """exp(mean next-token cross-entropy) of an ONNX decoder (input_ids -> logits) over the windows."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    ids = np.load(data_path)["input_ids"]
    total, count = 0.0, 0
    for start in range(0, len(ids), batch):
        x = ids[start:start + batch]
        logits = sess.run(None, {"input_ids": x})[0].astype(np.float64)[:, :-1]
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        target = x[:, 1:]
        total -= float(np.take_along_axis(logp, target[..., None], -1).sum())
        count += target.size
    return math.exp(total / count)


def bench(folder, target, epochs, batch, lr, extra, out_json):
    """onnxoto prune on the training windows, then perplexities and the kept widths by kind of group."""
    import subprocess

    dense = os.path.join(folder, "decoder_fortunes.onnx")
    pruned = os.path.join(folder, "decoder_fortunes.pruned.onnx")
    report = os.path.join(folder, "report")
    command = [sys.executable, "-m", "onnxoto", "prune", dense, "--data", os.path.join(folder, "train.npz"),
               "-o", pruned, "--target-sparsity", str(target), "--epochs", str(epochs), "--batch-size", str(batch),
               "--report", report, "--quiet"] + (["--lr", str(lr)] if lr else []) + extra
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    print(done.stdout[-3000:], done.stderr[-2000:])
    if done.returncode:
        sys.exit(done.returncode)
    result = json.load(open(os.path.join(report, "report.json")))
    kinds = {}
    for g in result["groups"]:
        kind = {2: "kv_groups", 256: "mlp_channels"}.get(g["channels"], str(g["channels"]))
        kept, total = kinds.get(kind, (0, 0))
        kinds[kind] = (kept + g["kept"], total + g["channels"])
    held = os.path.join(folder, "heldout.npz")
    info = {"command": " ".join(["onnxoto"] + command[3:]), "prune_seconds": round(time.time() - start),
            "ppl_dense": perplexity(dense, held), "ppl_pruned": perplexity(pruned, held),
            "removed": {k: f"{t - kept}/{t}" for k, (kept, t) in kinds.items()},
            "params": [result["dense"]["params"], result["pruned"]["params"]],
            "flops": [result["dense"]["flops"], result["pruned"]["flops"]],
            "verified": result["verified"], "max_rel_diff": result["max_rel_diff"],
            "train": json.load(open(os.path.join(folder, "train.json")))}
    if out_json:
        os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
        json.dump(info, open(out_json, "w"), indent=1)
    print(json.dumps(info, indent=1))


def train(corpus, out, steps, batch, lr, seed, prune_rows, held_rows):
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_decoders import build_decoder, export

    torch.set_num_threads(1)
    train_tokens, held_tokens = split(corpus)
    print(f"corpus: {len(train_tokens)} train bytes, {len(held_tokens)} held-out bytes")
    lm = build_decoder("llama", seed=seed, **SIZES)
    lm.train()
    opt = torch.optim.AdamW(lm.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    rng = np.random.default_rng(seed)
    start = time.time()
    for step in range(steps):
        x = torch.from_numpy(windows(train_tokens, batch, SEQ + 1, rng))
        logits = lm(input_ids=x[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 200 == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)
    lm.eval()
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "decoder_fortunes.onnx")
    export(lm, path, "legacy", cache=False)
    np.savez(os.path.join(out, "train.npz"), input_ids=windows(train_tokens, prune_rows, SEQ, np.random.default_rng(1)))
    np.savez(os.path.join(out, "heldout.npz"), input_ids=windows(held_tokens, held_rows, SEQ))
    ppl = perplexity(path, os.path.join(out, "heldout.npz"))
    info = {"steps": steps, "batch": batch, "lr": lr, "seq": SEQ, "sizes": SIZES,
            "params": sum(p.numel() for p in lm.parameters()), "train_seconds": round(time.time() - start),
            "heldout_ppl": ppl}
    json.dump(info, open(os.path.join(out, "train.json"), "w"), indent=1)
    print(json.dumps(info))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--corpus", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--prune-rows", type=int, default=512)
    t.add_argument("--held-rows", type=int, default=512)
    p = sub.add_parser("ppl")
    p.add_argument("model")
    p.add_argument("data")
    b = sub.add_parser("bench")
    b.add_argument("folder")
    b.add_argument("--target-sparsity", type=float, default=0.3)
    b.add_argument("--epochs", type=int, default=3)
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--lr", type=float, default=None)
    b.add_argument("--json", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                  "bench", "decoder_fortunes.json"))
    d = sub.add_parser("data")
    d.add_argument("--corpus", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--rows", type=int, default=4096)
    args, extra = parser.parse_known_args()
    if args.command == "data":  # more training windows for `prune` (same split, same seed)
        tokens = split(args.corpus)[0]
        np.savez(os.path.join(args.out, "train.npz"), input_ids=windows(tokens, args.rows, SEQ, np.random.default_rng(1)))
        return
    if args.command == "bench":
        bench(args.folder, args.target_sparsity, args.epochs, args.batch_size, args.lr, extra, args.json)
    elif args.command == "train":
        train(args.corpus, args.out, args.steps, args.batch, args.lr, args.seed, args.prune_rows, args.held_rows)
    else:
        print(f"{perplexity(args.model, args.data):.3f}")


if __name__ == "__main__":
    main()
