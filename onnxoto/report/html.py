"""report.html: the prune report as one self-contained page (CSS inline, plots as base64 PNG)."""
import base64
import html

from . import plots
from .prune import comparison_rows

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2533; margin: 0;
  background: #f5f7fa; }
main { max-width: 980px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #e3e7ee; }
.sub { color: #5b6578; margin: 0 0 16px; word-break: break-all; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 10px; font-weight: 600; font-size: 13px; }
.ok { background: #dcf2e3; color: #17663a; } .bad { background: #fbe0df; color: #9b1c1c; }
table { border-collapse: collapse; margin: 6px 0; } td, th { padding: 3px 12px; text-align: right; }
th { background: #eef2f7; font-weight: 600; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafbfd; }
.pair { display: flex; gap: 24px; align-items: flex-start; flex-wrap: wrap; }
img { max-width: 100%; display: block; } .note { background: #fff7e6; border: 1px solid #f0d9a8; padding: 8px 12px; }
.settings td { font-family: ui-monospace, monospace; font-size: 12px; padding: 1px 10px; }
"""


def report_html(report):
    """The page for a report as report_json gives it (report.json read back works too)."""
    have_plots = plots.available()
    sections = [_header(report), "" if have_plots else _no_plots(), _comparison(report, have_plots), _training(report, have_plots),
                _widths(report, have_plots), _settings(report)]
    if report.get("erased"):
        sections.insert(-1, _erased(report))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>onnxoto prune report: {escape(report['dense_model'])}</title><style>{STYLE}</style></head>"
            f"<body><main>{''.join(sections)}</main></body></html>\n")


def _header(report):
    verified = report["verified"]
    badge = (f"<span class=\"badge {'ok' if verified else 'bad'}\">{'verified' if verified else 'NOT verified'}"
             f" (max rel diff {report['max_rel_diff']:.2g})</span>")
    target = (f"target: {report['target_sparsity']:.0%} of channels" if report.get("target_flops") is None
              else f"target: {report['target_flops']:.0%} of FLOPs removed")
    return (f"<h1>onnxoto prune report</h1><p class=\"sub\">{escape(report['dense_model'])} &rarr; "
            f"{escape(report['pruned_model'])}</p><p>{badge} &nbsp; group sparsity {report['group_sparsity']:.3f} "
            f"({target})</p>")


def _comparison(report, have_plots):
    rows = comparison_rows(report["dense"], report["pruned"], report.get("metric"))
    numbers = table(["", "dense", "pruned", "ratio"], rows)
    picture = _image(plots.side_by_side(report), "pruned / dense") if have_plots else ""
    return f"<h2>Dense and pruned</h2><div class=\"pair\">{numbers}{picture}</div>"


def _training(report, have_plots):
    if not report.get("history"):
        return ""
    # a run resumed from a checkpoint of an older onnxoto has no trace: its epochs' table only
    drawn = have_plots and report.get("trace")
    body = _image(plots.training_curve(report), "training curve and sparsity schedule") if drawn else ""
    rows = [[int(h["epoch"]), f"{h['loss']:.4f}", f"{h.get('group_sparsity', 0):.3f}", h.get("phase", ""),
             f"{h['val_metric']:.4f}" if h.get("val_metric") is not None else "-"] for h in report["history"]]
    epochs = table(["epoch", "loss", "group sparsity", "phase", f"val {report.get('metric') or '-'}"], rows)
    return f"<h2>Training</h2>{body}{epochs}"


def _widths(report, have_plots):
    groups = report["groups"]
    body = _image(plots.kept_widths(groups), "kept channels per group") if have_plots and groups else ""
    listed = table(["group", "layer", "channels", "kept"],
                   [[g["id"], g["layer"], g["channels"], g["kept"]] for g in groups])
    return (f"<h2>Kept width per layer</h2>{body}<details><summary>as a table</summary>{listed}</details>")


def _erased(report):
    rows = [[u["id"], len(u["nodes"]), u["params"], f"{100 * u['flops_share']:.1f}%"] for u in report["erased"]]
    return f"<h2>Erased branches</h2>{table(['branch', 'nodes', 'params', 'FLOPs share'], rows)}"


def _settings(report):
    rows = [[k, v] for k, v in report.get("settings", {}).items() if v is not None]
    return f"<h2>Settings</h2><table class=\"settings\">{''.join(_row(r, 'td') for r in rows)}</table>"


def _no_plots():
    return (f"<p class=\"note\">The plots need matplotlib: <code>{plots.PLOT_EXTRA}</code>, then run again "
            "(the numbers are in the tables here and in report.json).</p>")


def _image(png, alt):
    data = base64.b64encode(png).decode("ascii")
    return f"<img alt=\"{escape(alt)}\" src=\"data:image/png;base64,{data}\">"


def table(headers, rows):
    return f"<table>{_row(headers, 'th')}{''.join(_row(r, 'td') for r in rows)}</table>"


def _row(cells, tag):
    return "<tr>" + "".join(f"<{tag}>{escape(c)}</{tag}>" for c in cells) + "</tr>"


def escape(value):
    return html.escape(str(value))
