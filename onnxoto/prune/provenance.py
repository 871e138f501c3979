"""Where a pruned model came from, in its own metadata_props: onnxoto's version, the settings as run and
the kept width of every group, so a file found later says how it was made (`onnx.load(f).metadata_props`)."""
import json
import os

from .. import __version__

PREFIX = "onnxoto."


def stamp(proto, source, settings, groups, max_rel_diff):
    """Add (or replace) the onnxoto.* entries of proto.metadata_props, keeping the exporter's own."""
    entries = {
        "version": __version__,
        "source": os.path.basename(os.fspath(source)),
        "settings": json.dumps(settings, sort_keys=True),
        "kept_widths": json.dumps({g["id"]: [g["kept"], g["channels"]] for g in groups}),
        "max_rel_diff": f"{max_rel_diff:.3g}",
    }
    kept = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith(PREFIX)]
    del proto.metadata_props[:]
    for key, value in kept + [(PREFIX + k, v) for k, v in entries.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def read(proto):
    """The onnxoto.* entries as written: settings and kept_widths decoded."""
    entries = {p.key[len(PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(PREFIX)}
    for key in ("settings", "kept_widths"):
        if key in entries:
            entries[key] = json.loads(entries[key])
    return entries
