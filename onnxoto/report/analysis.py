"""What `onnxoto analyze` prints and writes."""
from ..groups import prunable_params
from .table import format_table, human, share


def analysis_json(analysis):
    return {
        "model": analysis.model.name,
        "params": int(analysis.params),
        "flops": int(analysis.flops),
        "prunable_params": prunable_params(analysis),
        "groups": [{"id": g.id, "layer": g.layer, "channels": g.num_zigs, "prunable": g.prunable, "reason": g.reason,
                    "params": int(g.params), "flops": int(g.flops), "params_per_zig": g.params_per_zig,
                    "flops_per_zig": g.flops_per_zig, "initializers": g.initializers,
                    "zig_width": {s.name: int(s.index.shape[1]) for s in g.slices}, "changes_io": g.io,
                    "folded_into": [f.label for f in g.folds] if g.prunable else []}
                   for g in analysis.groups],
        "erasable": [{"id": u.id, "kind": u.kind, "join": u.join, "nodes": u.nodes, "params": u.param_count,
                      "flops": u.flops}
                     for u in analysis.erasable],
    }


def analysis_text(analysis):
    rows = []
    for g in analysis.groups:
        status = "prunable" if g.prunable else f"no: {g.reason}"
        if g.prunable and g.io:
            status += f" (changes {', '.join(g.io)})"
        if g.prunable and g.folds:  # zeroed, the channels are a constant: cut, it joins these biases
            status += f" (a constant, folded into the bias of {', '.join(f.label for f in g.folds)})"
        rows.append([g.id, g.layer, g.num_zigs, share(g.params, analysis.params),
                     share(g.flops, analysis.flops) if g.prunable else "-", status])
    table = format_table(["group", "layer", "channels", "params", "flops", "prunable"], rows)
    prunable = prunable_params(analysis)
    summary = (f"{analysis.model.name}: {human(analysis.params)} params, {human(analysis.flops)} FLOPs, "
               f"{len(analysis.prunable)}/{len(analysis.groups)} groups prunable covering "
               f"{share(prunable, analysis.params)} of params (params/flops columns: removed if the whole group were cut)")
    if analysis.erasable:
        units = format_table(["erasable branch", "join", "nodes", "params", "flops"],
                             [[u.id, f"{u.kind} {u.join}", len(u.nodes), share(u.param_count, analysis.params),
                               share(u.flops, analysis.flops)]
                              for u in analysis.erasable])
        table = f"{table}\n\n{units}"
    return f"{table}\n\n{summary}"

