"""Where a pruned model came from, in its own metadata_props: onnxoto's version, the settings as run and
the kept width of every group, so a file found later says how it was made (`onnx.load(f).metadata_props`)."""
import json
import os

from .. import __version__

PREFIX = "onnxoto."


def stamp(proto, source, settings, groups, max_rel_diff, io_shapes=None):
    """Add (or replace) the onnxoto.* entries of proto.metadata_props, keeping the exporter's own.
    io_shapes (io_changes): graph inputs/outputs the cut changed (a KV cache), written with the
    num_key_value_heads a runtime is configured with."""
    entries = {
        "version": __version__,
        "source": os.path.basename(os.fspath(source)),
        "settings": json.dumps(settings, sort_keys=True),
        "kept_widths": json.dumps({g["id"]: [g["kept"], g["channels"]] for g in groups}),
        "max_rel_diff": f"{max_rel_diff:.3g}",
    }
    if io_shapes:
        entries["io_shapes"] = json.dumps(io_shapes)
        heads = num_key_value_heads(io_shapes)
        if heads:
            entries["num_key_value_heads"] = json.dumps(heads)
    kept = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith(PREFIX)]
    del proto.metadata_props[:]
    for key, value in kept + [(PREFIX + k, v) for k, v in entries.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def read(proto):
    """The onnxoto.* entries as written: settings and kept_widths decoded."""
    entries = {p.key[len(PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(PREFIX)}
    for key in ("settings", "kept_widths", "io_shapes", "num_key_value_heads"):
        if key in entries:
            entries[key] = json.loads(entries[key])
    return entries


def io_changes(dense, pruned):
    """Graph inputs and outputs whose declared shape the cut changed: name -> {"before", "after"}
    (ints, symbols as names)."""
    def shapes(proto):
        return {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]
                for v in [*proto.graph.input, *proto.graph.output]}
    before, after = shapes(dense), shapes(pruned)
    return {name: {"before": before[name], "after": after[name]} for name in after
            if name in before and before[name] != after[name]}


def num_key_value_heads(io_shapes):
    """Per cached layer (graph inputs named like a past key, (N, kv_heads, P, head_dim), in graph
    order), its KV head count after the cut; [] when no such input changed."""
    return [shape["after"][1] for name, shape in io_shapes.items()
            if "key" in name.lower() and name.lower().startswith("past") and len(shape["after"]) == 4]
