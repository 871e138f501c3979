"""`onnxoto analyze --html`: the network's groups in layer order on one self-contained page, each coloured
with the share of the model it could remove, or with the reason it is blocked. A strip of one cell per group
shows a model of hundreds of layers at a glance; the table below has one short row per group."""
import re
from collections import Counter

from ..groups import prunable_params
from .html import STYLE, escape, table
from .table import human, share

# blocked groups: one colour per kind of reason (the reason with its tensor and node names taken out)
BLOCKED_COLOURS = ("#d9534f", "#8e6bb8", "#e3a21a", "#5b8fb0", "#b5651d", "#c76c9b", "#6f7d8c", "#9aa83b")
PAGE_STYLE = """
.strip { display: flex; flex-wrap: wrap; gap: 2px; margin: 8px 0 14px; }
.strip a { width: 12px; height: 18px; border-radius: 2px; display: block; }
.legend span { display: inline-block; margin: 2px 14px 2px 0; } .legend i { display: inline-block; width: 12px;
  height: 12px; border-radius: 2px; vertical-align: -1px; margin-right: 5px; }
.groups td { font-size: 12.5px; padding: 1px 8px; white-space: nowrap; }
.groups td.why { white-space: normal; text-align: left; }
.groups th:nth-child(n+3):nth-child(-n+4), .groups th:last-child { text-align: left; }
.groups td.name { text-align: left; max-width: 330px; overflow: hidden; text-overflow: ellipsis; }
.groups tr:target td { outline: 2px solid #1d2533; } .groups thead th { position: sticky; top: 0; }
.share { display: inline-block; height: 10px; background: #2e8b57; vertical-align: 0; }
main { max-width: 1180px; }
"""


def analysis_html(analysis):
    """The page for an analysis (groups.analyze)."""
    groups = _in_layer_order(analysis)
    kinds = _blocked_kinds(groups)
    biggest = max([g.params for g in groups if g.prunable] + [1])
    colours = {g.id: _colour(g, kinds, biggest) for g in groups}
    body = [_summary(analysis), _strip(groups, colours, analysis), _legend(groups, kinds),
            _group_table(groups, colours, analysis)]
    if analysis.erasable:
        body.append(_erasable(analysis))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>onnxoto analyze: {escape(analysis.model.name)}</title><style>{STYLE}{PAGE_STYLE}</style>"
            f"</head><body><main>{''.join(body)}</main></body></html>\n")


def reason_kind(reason):
    """A blocked group's reason without its names and shapes: "normalized over by LayerNormalization '…'"."""
    return re.sub(r" *\(.*\)", "", re.sub(r"'[^']*'", "'…'", reason)).strip()


def _in_layer_order(analysis):
    """Groups sorted by the position of their layer (the node that reads the group's first producer) in
    the graph's node list; the graph is topologically sorted, so this is the network's order."""
    position = {node.name: k for k, node in enumerate(analysis.model.proto.graph.node)}
    order = {g.id: k for k, g in enumerate(analysis.groups)}
    return sorted(analysis.groups, key=lambda g: (position.get(g.layer, len(position)), order[g.id]))


def _blocked_kinds(groups):
    """Reason kinds, most frequent first, with their colours."""
    counts = Counter(reason_kind(g.reason) for g in groups if not g.prunable)
    return {kind: BLOCKED_COLOURS[k % len(BLOCKED_COLOURS)] for k, (kind, _) in enumerate(counts.most_common())}


def _colour(group, kinds, biggest):
    """Prunable: green, darker the larger its share of the model's parameters; blocked: its reason's colour."""
    if not group.prunable:
        return kinds[reason_kind(group.reason)]
    strength = 0.25 + 0.75 * (group.params / biggest) ** 0.5
    return f"rgba(46, 139, 87, {strength:.2f})"


def _summary(analysis):
    prunable = prunable_params(analysis)
    share = f"{100 * prunable / analysis.params:.1f}%" if analysis.params else "-"
    return (f"<h1>onnxoto analyze</h1><p class=\"sub\">{escape(analysis.model.name)}: "
            f"{len(analysis.model.proto.graph.node)} nodes, {human(analysis.params)} params, "
            f"{human(analysis.flops)} FLOPs</p><p><b>{len(analysis.prunable)} of {len(analysis.groups)} groups "
            f"prunable</b>, covering {share} of the parameters; {len(analysis.erasable)} erasable branches.</p>")


def _strip(groups, colours, analysis):
    cells = "".join(f"<a href=\"#g{k}\" style=\"background:{colours[g.id]}\" title=\"{escape(_tooltip(g, analysis))}\">"
                    "</a>" for k, g in enumerate(groups))
    return f"<h2>Groups in layer order</h2><div class=\"strip\">{cells}</div>"


def _legend(groups, kinds):
    prunable = sum(g.prunable for g in groups)
    items = [f"<span><i style=\"background:rgba(46,139,87,0.9)\"></i>prunable ({prunable}; darker: more of the "
             "model's parameters)</span>"]
    counts = Counter(reason_kind(g.reason) for g in groups if not g.prunable)
    items += [f"<span><i style=\"background:{colour}\"></i>{escape(kind)} ({counts[kind]})</span>"
              for kind, colour in kinds.items()]
    return f"<div class=\"legend\">{''.join(items)}</div>"


def _group_table(groups, colours, analysis):
    biggest = max([g.params for g in groups] + [1])
    rows = []
    for k, g in enumerate(groups):
        bar = f"<span class=\"share\" style=\"width:{60 * g.params / biggest:.0f}px\"></span>" if g.prunable else ""
        status = "prunable" if g.prunable else escape(g.reason)
        rows.append(f"<tr id=\"g{k}\" class=\"group\"><td style=\"background:{colours[g.id]}\"></td><td>{k + 1}</td>"
                    f"<td class=\"name\" title=\"{escape(g.layer)}\">{escape(g.layer or '-')}</td>"
                    f"<td class=\"name\" title=\"{escape(g.id)}\">{escape(g.id)}</td><td>{g.num_zigs}</td>"
                    f"<td>{bar} {share(g.params, analysis.params)}</td>"
                    f"<td>{share(g.flops, analysis.flops) if g.prunable else '-'}</td>"
                    f"<td class=\"why\">{status}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("", "#", "layer", "group", "channels", "params", "FLOPs", "prunable"))
    return (f"<table class=\"groups\"><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            "<p class=\"sub\">params / FLOPs: removed if the whole group were cut.</p>")


def _erasable(analysis):
    rows = [[u.id, f"{u.kind} {u.join}", len(u.nodes), share(u.param_count, analysis.params),
             share(u.flops, analysis.flops)] for u in analysis.erasable]
    return f"<h2>Erasable branches</h2>{table(['branch', 'join', 'nodes', 'params', 'FLOPs'], rows)}"


def _tooltip(group, analysis):
    state = f"prunable, {share(group.params, analysis.params)} of params" if group.prunable else group.reason
    return f"{group.layer or group.id}: {group.num_zigs} channels, {state}"

