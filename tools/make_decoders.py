"""Decoder LLMs for the zoo: Llama- and Qwen2-style models built from `transformers` configs with
random weights (nothing downloaded), exported to ONNX by the TorchScript and the dynamo exporter,
without and with a KV cache (past/present tensors as graph inputs/outputs).

Run with a python that has torch, transformers, onnx and onnxscript (e.g. /work/wt/torchenv):
    python tools/make_decoders.py [--only decoder_llama,decoder_qwen2_cache] [--no-check]

Every decoder: grouped-query attention (8 query heads over 2 KV heads), SwiGLU MLP, RMSNorm, rotary
embeddings (eager attention, so repeat-KV is the Unsqueeze/Expand/Reshape transformers writes).
`build_decoder(family, ...)` is the builder a scale benchmark calls with its own sizes.

Graph names: input `input_ids` (N, S) int64; output `logits` (N, S, vocab). With a cache also
`past_key.<i>`/`past_value.<i>` (N, kv_heads, P, head_dim) in and `present_key.<i>`/`present_value.<i>`
(N, kv_heads, P + S, head_dim) out.
"""
import argparse
import os
import sys
import warnings

import numpy as np
import onnx
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import brought_down  # noqa: E402  (a sibling tool: the stripping and version lowering)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "models")
EXTERNAL_OVER = 1_800_000_000  # weight bytes above which a file keeps its weights in external data (2 GB protobuf limit)

SMALL = dict(hidden=64, layers=2, heads=8, kv_heads=2, intermediate=128, vocab=256)

# name -> (family, exporter, cache, tied embeddings); "mask" as the cache: attention_mask (N, S) as an input
ZOO = {
    "decoder_llama_mask": ("llama", "legacy", "mask", False),
    "decoder_llama": ("llama", "legacy", False, False),
    "decoder_llama_tied": ("llama", "legacy", False, True),
    "decoder_llama_dynamo": ("llama", "dynamo", False, False),
    "decoder_llama_cache": ("llama", "legacy", True, False),
    "decoder_qwen2": ("qwen2", "legacy", False, True),
    "decoder_qwen2_dynamo": ("qwen2", "dynamo", False, True),
    "decoder_qwen2_cache": ("qwen2", "legacy", True, True),
    "decoder_llama_cache_dynamo": ("llama", "dynamo", True, False),
}


def config(family, hidden, layers, heads, kv_heads, intermediate, vocab, tied, max_positions=512):
    """A transformers config of the family with these sizes (eager attention, float32)."""
    from transformers import LlamaConfig, Qwen2Config

    common = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  num_key_value_heads=kv_heads, intermediate_size=intermediate, vocab_size=vocab,
                  max_position_embeddings=max_positions, tie_word_embeddings=tied, rms_norm_eps=1e-6,
                  attn_implementation="eager", use_cache=False)
    if family == "llama":
        return LlamaConfig(**common)
    if family == "qwen2":
        return Qwen2Config(**common)
    raise ValueError(f"unknown family {family!r}")


def build_decoder(family="llama", hidden=64, layers=2, heads=8, kv_heads=2, intermediate=128, vocab=256,
                  tied=False, seed=0, scale_norms=True):
    """A CausalLM of the family with random weights. RMSNorm scales are randomized (not all ones)
    so that every channel matters to the output."""
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = config(family, hidden, layers, heads, kv_heads, intermediate, vocab, tied)
    model = (LlamaForCausalLM if family == "llama" else Qwen2ForCausalLM)(cfg).eval()
    if scale_norms:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.uniform_(0.5, 1.5)
                elif name.endswith(".bias"):  # Qwen2's q/k/v biases
                    p.normal_(0, 0.02)
    return model


class NoCache(torch.nn.Module):
    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids):
        return self.lm(input_ids=input_ids, use_cache=False).logits


class WithMask(torch.nn.Module):
    """input_ids and attention_mask (N, S) int64 (1 for a token, 0 for padding) in; logits out."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask):
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


class WithCache(torch.nn.Module):
    """input_ids and per-layer past key/value tensors in; logits and present key/value out."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.lm.config)
        for i in range(len(past) // 2):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.lm(input_ids=input_ids, past_key_values=cache, use_cache=True)
        present = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def io_names(layers, cache):
    inputs, outputs = ["input_ids"], ["logits"]
    if cache == "mask":
        return inputs + ["attention_mask"], outputs
    if cache:
        for i in range(layers):
            inputs += [f"past_key.{i}", f"past_value.{i}"]
            outputs += [f"present_key.{i}", f"present_value.{i}"]
    return inputs, outputs


def example(lm, batch=2, seq=5, past=3, cache=False, seed=0):
    cfg = lm.config
    g = torch.Generator().manual_seed(seed)
    args = [torch.randint(0, cfg.vocab_size, (batch, seq), generator=g)]
    if cache == "mask":  # left padding on the first row
        mask = torch.ones(batch, seq, dtype=torch.int64)
        mask[0, :2] = 0
        return (args[0], mask)
    if cache:
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        for _ in range(2 * cfg.num_hidden_layers):
            args.append(torch.randn(batch, cfg.num_key_value_heads, past, head_dim, generator=g))
    return tuple(args)


def _no_packed_sequences():
    """transformers looks for packed sequences in position ids (torch.diff, which neither exporter
    writes) when there is no mask and no cache; the zoo's batches are never packed."""
    from transformers import masking_utils

    masking_utils.find_packed_sequence_indices = lambda position_ids: None


def export(lm, path, exporter="legacy", cache=False):
    _no_packed_sequences()
    module = WithMask(lm) if cache == "mask" else WithCache(lm) if cache else NoCache(lm)
    args = example(lm, cache=cache)
    inputs, outputs = io_names(lm.config.num_hidden_layers, cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            axes = {"input_ids": {0: "N", 1: "S"}, "logits": {0: "N", 1: "S"}}
            for name in inputs[1:]:
                axes[name] = {0: "N", 1: "S"} if cache == "mask" else {0: "N", 2: "P"}
            for name in outputs[1:]:
                axes[name] = {0: "N", 2: "T"}
            torch.onnx.export(module, args, path, dynamo=False, opset_version=17, input_names=inputs,
                              output_names=outputs, dynamic_axes=axes)
        else:
            n, s = torch.export.Dim("N", min=1, max=64), torch.export.Dim("S", min=2, max=256)
            shapes = [{0: n, 1: s}]
            if cache == "mask":
                shapes.append({0: n, 1: s})
            elif cache:  # forward(input_ids, *past): the past tensors are one (varargs) argument
                p = torch.export.Dim("P", min=1, max=256)
                shapes.append(tuple({0: n, 2: p} for _ in inputs[1:]))
            program = torch.onnx.export(module, args, dynamo=True, opset_version=18, input_names=inputs,
                                        output_names=outputs, dynamic_shapes=tuple(shapes), verbose=False)
            program.save(path)
    bring_down(path)
    return module, args


def bring_down(path):
    """Loadable by onnxruntime-training 1.19 (opset <= 21, IR <= 10), no stack traces; one file, or for
    a model over 2 GB (the scale benchmark's) one external data file `<name>.data` beside it."""
    folder = os.path.dirname(os.path.abspath(path))
    old_files = {e.value for t in onnx.load(path, load_external_data=False).graph.initializer
                 for e in t.external_data if e.key == "location"}
    m = brought_down(onnx.load(path))
    weight_bytes = sum(len(t.raw_data) for t in m.graph.initializer)
    data = os.path.basename(path) + ".data"
    for name in old_files:  # the exporter's own files (TorchScript writes one per tensor)
        if os.path.exists(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name))
    if os.path.exists(path + ".data"):
        os.remove(path + ".data")
    if weight_bytes > EXTERNAL_OVER:
        onnx.save(m, path, save_as_external_data=True, all_tensors_to_one_file=True, location=data)
    else:
        onnx.save(m, path)


def check(path, module, lm, cache):
    """onnxruntime against torch on a fresh batch (other batch, sequence and past lengths)."""
    import onnxruntime as ort

    args = example(lm, batch=3, seq=7, past=4, cache=cache, seed=1)
    with torch.no_grad():
        ref = module(*args)
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)}
    got = sess.run(None, feeds)
    worst = max(float(np.abs(g - r.numpy()).max() / (np.abs(r.numpy()).max() + 1e-12)) for g, r in zip(got, ref))
    return worst


def make(name, check_outputs=True):
    family, exporter, cache, tied = ZOO[name]
    lm = build_decoder(family, tied=tied, seed=sum(map(ord, name)), **SMALL)
    path = os.path.join(MODELS, name + ".onnx")
    module, _ = export(lm, path, exporter, cache)
    params = sum(p.numel() for p in lm.parameters())
    line = f"{name}: {params} params, {os.path.getsize(path) // 1024} KiB"
    if check_outputs:
        line += f", ort vs torch {check(path, module, lm, cache):.1e} (relative)"
    print(line)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="")
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(ZOO)
    failed = []
    for name in names:
        try:
            make(name, not args.no_check)
        except Exception as exc:  # report every failure, then exit non-zero
            failed.append(name)
            print(f"{name}: FAILED {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
