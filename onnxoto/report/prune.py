"""The prune report: report.json and report.md, dense and pruned side by side."""
import json
import os

from .table import format_table, human


def ratio(pruned, dense):
    return pruned / dense if dense else None


def report_json(result):
    data = {
        "dense_model": result.dense_model, "pruned_model": result.pruned_model,
        "dense": result.dense, "pruned": result.pruned, "metric": result.metric,
        "target_sparsity": result.target_sparsity, "target_flops": result.target_flops,
        "group_sparsity": result.group_sparsity, "verified": result.verified, "max_rel_diff": result.max_rel_diff,
        "groups": result.groups, "erased": result.erased, "history": result.history, "settings": result.settings,
        "latency": result.latency, "seconds": result.seconds, "trace": result.trace, "schedule": result.schedule,
        "io_shapes": result.io_shapes,
    }
    data["ratios"] = {k: ratio(result.pruned.get(k), result.dense.get(k)) for k in ("params", "flops")}
    return data


def comparison_rows(dense, pruned, metric):
    rows = []
    for key, label in (("params", "params"), ("flops", "FLOPs"), ("file_bytes", "file bytes")):
        if key in dense:
            rows.append([label, human(dense[key]), human(pruned[key]), f"{ratio(pruned[key], dense[key]):.3f}"])
    for key in ("batch1", "batchN"):
        if key in dense.get("latency_ms", {}):
            d, p = dense["latency_ms"][key], pruned["latency_ms"][key]
            name = "latency batch 1 (ms)" if key == "batch1" else f"latency batch {dense['latency_ms']['N']} (ms)"
            rows.append([name, f"{d:.3f}", f"{p:.3f}", f"{p / d:.3f}"])
    rows += _speedup_rows(dense, pruned)
    if dense.get("metric") is not None:
        rows.append([metric or "metric", f"{dense['metric']:.4f}", f"{pruned['metric']:.4f}",
                     f"{pruned['metric'] - dense['metric']:+.4f}"])
    return rows


def _speedup_rows(dense, pruned):
    """Realised speed-up at each batch next to the ideal one, the FLOPs ratio."""
    if not pruned.get("flops") or "latency_ms" not in dense:
        return []
    ideal, rows = dense["flops"] / pruned["flops"], []
    for key in ("batch1", "batchN"):
        if key in dense["latency_ms"]:
            speedup = dense["latency_ms"][key] / pruned["latency_ms"][key]
            batch = 1 if key == "batch1" else dense["latency_ms"]["N"]
            rows.append([f"speed-up batch {batch}", "", f"{speedup:.2f}x",
                         f"{100 * speedup / ideal:.0f}% of ideal {ideal:.2f}x"])
    return rows


def latency_text(latency):
    """The --target-latency line: measured next to the target; a miss said plainly."""
    line = (f"latency at batch {latency['batch']}: {latency['measured']:.3f} of dense, measured after the cut "
            f"(target {latency['target']}, the table predicted {latency['predicted']:.3f})")
    if not latency["met"]:
        line += f"; MISSED the target by {100 * (latency['measured'] / latency['target'] - 1):.0f}%"
    return line


def summary_text(result):
    table = format_table(["", "dense", "pruned", "ratio"], comparison_rows(result.dense, result.pruned, result.metric))
    target = (f"target latency kept {result.latency['target']}" if result.latency
              else f"target sparsity {result.target_sparsity}" if result.target_flops is None
              else f"target FLOPs removed {result.target_flops}")
    check = "verified" if result.verified else "NOT verified"
    lines = [table, "", f"group sparsity {result.group_sparsity:.3f} ({target})"]
    if result.latency:
        lines.append(latency_text(result.latency))
    if result.erased:
        lines.append(f"erased {len(result.erased)} branches "
                     f"({100 * sum(u['flops_share'] for u in result.erased):.1f}% of FLOPs)")
    if result.io_shapes:
        changed = ", ".join(f"{name} {'x'.join(map(str, shape['after']))}" for name, shape in result.io_shapes.items())
        lines.append(f"graph inputs/outputs changed (configure the runtime's cache): {changed}")
    lines.append(f"cut model {check} against the trained model (max rel diff {result.max_rel_diff:.2g}); "
                 f"written to {result.pruned_model}")
    return "\n".join(lines)


def write_report(result, folder):
    """report.json, report.md and report.html in `folder`."""
    from .html import report_html
    os.makedirs(folder, exist_ok=True)
    data = report_json(result)
    with open(os.path.join(folder, "report.json"), "w") as f:
        json.dump(data, f, indent=2)
    with open(os.path.join(folder, "report.html"), "w") as f:
        f.write(report_html(data))
    groups = format_table(["group", "layer", "channels", "kept"],
                          [[g["id"], g["layer"], g["channels"], g["kept"]] for g in result.groups])
    curve = format_table(["epoch", "loss", "group sparsity", "phase", f"val {result.metric or '-'}"],
                         [[int(h["epoch"]), f"{h['loss']:.4f}", f"{h.get('group_sparsity', 0):.3f}", h.get("phase", ""),
                           f"{h['val_metric']:.4f}" if h.get("val_metric") is not None else "-"]
                          for h in result.history])
    settings = ", ".join(f"{k} {v}" for k, v in result.settings.items() if v is not None)
    with open(os.path.join(folder, "report.md"), "w") as f:
        f.write(f"# onnxoto prune report\n\n{result.dense_model} -> {result.pruned_model}\n\n```\n"
                f"{summary_text(result)}\n```\n\nSettings: {settings or '-'}\n\n"
                f"## Kept channels per group\n\n```\n{groups}\n```\n\n"
                f"## Erased operators\n\n{_erased_text(result)}\n\n## Training\n\n```\n{curve}\n```\n")


def _erased_text(result):
    if not result.erased:
        return "none"
    rows = [[u["id"], len(u["nodes"]), human(u["params"]), f"{100 * u['flops_share']:.1f}%"] for u in result.erased]
    return "```\n" + format_table(["branch", "nodes", "params", "FLOPs share"], rows) + "\n```"
