"""The `onnxoto` command. User errors print one line and exit with code 2."""
import functools
import json
import os
import sys

import click

from .errors import OnnxotoError


def user_errors(command):
    """Turn OnnxotoError into a one-line message and exit code 2 (ONNXOTO_DEBUG=1 shows tracebacks)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except OnnxotoError as exc:
            if os.environ.get("ONNXOTO_DEBUG"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
    return wrapper


def write_json(path, data):
    """Write JSON atomically: a temp file next to it, then rename."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


@click.group()
@click.version_option(package_name="onnxoto")
def main():
    """Structured pruning of ONNX models: analyze, prune, verify."""


@main.command()
@click.argument("model", type=click.Path())
@click.option("--json", "json_path", type=click.Path(), help="Also write the groups as JSON to this file.")
@user_errors
def analyze(model, json_path):
    """Show the pruning groups of MODEL, their cost, and why the others can't be pruned."""
    from . import graph, groups
    from .report import analysis_json, analysis_text
    analysis = groups.analyze(graph.load(model))
    click.echo(analysis_text(analysis))
    if json_path:
        write_json(json_path, analysis_json(analysis))


@main.command()
@click.argument("model", type=click.Path())
@click.option("--subsets", default=3, show_default=True, help="Random ZIG subsets checked per group.")
@click.option("--seed", default=0, show_default=True, help="Seed for subsets and inputs.")
@click.option("--json", "json_path", type=click.Path(), help="Write the certificate as JSON to this file.")
@user_errors
def verify(model, subsets, seed, json_path):
    """Certify that cutting each prunable group of MODEL gives the outputs of zeroing it."""
    from . import graph, groups, verify as verifier
    analysis = groups.analyze(graph.load(model, strict=True))
    cert = verifier.certify(analysis, subsets=subsets, seed=seed)
    for check in cert.failures:
        detail = check.error or f"rel diff {check.rel_diff:.3g}"
        click.echo(f"FAIL {check.group} ({check.removed} ZIGs cut): {detail}")
    click.echo(f"verified {cert.groups_verified}/{cert.groups_prunable} prunable groups, "
               f"{cert.units_verified}/{cert.units_total} erasable branches, "
               f"max rel diff {cert.max_rel_diff:.3g} (tolerance {verifier.TOLERANCE:g})")
    if json_path:
        write_json(json_path, cert.to_json())
    sys.exit(0 if cert.passed else 1)
