"""The prune report's pictures, drawn with matplotlib (the `plot` extra) and returned as PNG bytes.

Only matplotlib's object API is used (no pyplot): nothing changes the backend of a program that imports us."""
import io

DENSE, PRUNED, SCHEDULE = "#b8c4d6", "#2f6db5", "#e08a2c"
PLOT_EXTRA = "pip install 'onnxoto[plot]'"


def available():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def training_curve(report):
    """Loss (every few steps) and the validation metric per epoch over the steps; below, the group sparsity
    against the schedule: warm-up, the pruning periods (shaded), fine-tuning, and the target."""
    trace, schedule, history = report["trace"], report["schedule"], report["history"]
    figure = _figure(9, 5.4)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    steps = [row[0] for row in trace]
    top.plot(steps, [row[1] for row in trace], color=PRUNED, lw=1, label="training loss")
    top.set_ylabel("loss")
    epoch_ends = [h["epoch"] * schedule["steps_per_epoch"] for h in history]
    if any(h.get("val_metric") is not None for h in history):
        metric = top.twinx()
        metric.plot(epoch_ends, [h.get("val_metric") for h in history], "o-", color=SCHEDULE, lw=1.5,
                    label=f"validation {report['metric'] or 'metric'}")
        metric.set_ylabel(f"validation {report['metric'] or 'metric'}")
        metric.legend(loc="upper right", frameon=False)
    top.legend(loc="upper center", frameon=False)
    _phases(top, schedule, labels=True)
    _phases(bottom, schedule, labels=False)
    bottom.plot(steps, [row[2] for row in trace], color=PRUNED, lw=1.5, label="group sparsity (ZIGs zero)")
    if report.get("target_sparsity") is not None:
        bottom.step(*_target_steps(schedule, report["target_sparsity"]), where="post", color=SCHEDULE, ls="--",
                    label="scheduled target")
    bottom.set_ylabel("group sparsity")
    bottom.set_xlabel("step")
    bottom.set_ylim(0, max([0.05] + [row[2] for row in trace] + [report.get("target_sparsity") or 0]) * 1.15)
    if report.get("target_flops") is not None:
        removed = 1 - report["pruned"]["flops"] / report["dense"]["flops"]
        bottom.text(0.99, 0.05, f"target: {report['target_flops']:.0%} of FLOPs removed, reached {removed:.1%}",
                    transform=bottom.transAxes, ha="right", fontsize=9, color=SCHEDULE)
    bottom.legend(loc="upper left", frameon=False)
    return _png(figure)


def kept_widths(groups):
    """One horizontal bar per group, in the network's order: the channels it had, and those kept."""
    height = 1.2 + 0.22 * len(groups)
    figure = _figure(9, height)
    axes = figure.subplots()
    rows = list(range(len(groups)))[::-1]  # the first layer on top
    axes.barh(rows, [g["channels"] for g in groups], color=DENSE, label="before", height=0.8)
    axes.barh(rows, [g["kept"] for g in groups], color=PRUNED, label="after", height=0.8)
    axes.set_yticks(rows, [_short(g["layer"] or g["id"]) for g in groups], fontsize=7)
    axes.set_ylim(-0.6, len(groups) - 0.4)
    axes.set_xlabel("channels (ZIGs)")
    _legend_above(axes)
    axes.margins(x=0.02)
    return _png(figure)


def side_by_side(report):
    """The pruned model's params, FLOPs, file size and latencies as fractions of the dense model's."""
    dense, pruned = report["dense"], report["pruned"]
    names, values = [], []
    for key, label in (("params", "params"), ("flops", "FLOPs"), ("file_bytes", "file size")):
        if dense.get(key):
            names.append(label)
            values.append(pruned[key] / dense[key])
    latency = dense.get("latency_ms", {})
    for key in ("batch1", "batchN"):
        if latency.get(key):
            names.append("latency, batch 1" if key == "batch1" else f"latency, batch {latency['N']}")
            values.append(pruned["latency_ms"][key] / latency[key])
    if report.get("metric") == "accuracy" and dense.get("metric"):
        names.append("accuracy")
        values.append(pruned["metric"] / dense["metric"])
    figure = _figure(6, 0.9 + 0.45 * len(names))
    axes = figure.subplots()
    rows = list(range(len(names)))[::-1]
    axes.barh(rows, [1.0] * len(names), color=DENSE, height=0.7, label="dense")
    axes.barh(rows, values, color=PRUNED, height=0.7, label="pruned")
    for row, value in zip(rows, values):
        axes.text(value + 0.01, row, f"{value:.2f}", va="center", fontsize=9)
    axes.set_yticks(rows, names)
    axes.set_xlim(0, max([1.15] + [v + 0.15 for v in values]))
    axes.set_xlabel("pruned / dense")
    _legend_above(axes)
    return _png(figure)


def _phases(axes, schedule, labels):
    """Shade the pruning phase, mark its periods."""
    start, end, periods = schedule["start"], schedule["end"], schedule["periods"]
    axes.axvspan(start, end, color=SCHEDULE, alpha=0.08, lw=0)
    length = (end - start) / periods if periods else 0
    for k in range(1, periods):
        axes.axvline(start + k * length, color=SCHEDULE, alpha=0.25, lw=0.5)
    if labels:
        transform = axes.get_xaxis_transform()
        for x, text in ((start / 2, "warm-up"), ((start + end) / 2, f"pruning ({periods} periods)"),
                        ((end + schedule["total"]) / 2, "fine-tune")):
            axes.text(x, 1.02, text, transform=transform, ha="center", fontsize=8, color="#555")


def _target_steps(schedule, target):
    """The share of the target each period reaches: (period + 1) / periods, from its first step."""
    start, end, periods = schedule["start"], schedule["end"], schedule["periods"]
    length = (end - start) / periods
    xs = [0, start] + [start + k * length for k in range(1, periods)] + [end, schedule["total"]]
    ys = [0, target / periods] + [target * (k + 1) / periods for k in range(1, periods)] + [target, target]
    return xs, ys


def _legend_above(axes):
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)


def _short(name, width=38):
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _figure(width, height):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
