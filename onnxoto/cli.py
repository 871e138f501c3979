"""The `onnxoto` command. User errors print one line and exit with code 2."""
import dataclasses
import functools
import json
import os
import sys

import click
import numpy as np

from .errors import OnnxotoError, OptionError

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")  # the bundled demo model and data


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


def quiet_option(command):
    """--quiet: no progress bars and no per-epoch lines; results and errors still print."""
    def set_quiet(ctx, param, value):
        from . import progress
        progress.set_quiet(value)
    return click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=set_quiet,
                        help="No progress bars or per-epoch lines (results and errors still print).")(command)


def log_line(line):
    """A line of progress for a log (one per epoch); dropped with --quiet."""
    from . import progress
    if not progress.is_quiet():
        click.echo(line, err=True)


def write_json(path, data):
    """Write JSON atomically: a temp file next to it, then rename."""
    write_text(path, json.dumps(data, indent=2))


def write_text(path, text):
    """Write atomically: a temp file next to it, then rename."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OptionError(f"{path}: folder {folder} does not exist")
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@click.group()
@click.version_option(package_name="onnxoto")
def main():
    """Structured pruning of ONNX models: analyze, prune, verify."""


def allow_io_change_option(command):
    return click.option("--allow-io-change", is_flag=True,
                        help="Let groups change graph inputs and outputs they reach together (a KV cache: "
                             "past and present tensors lose the cut heads; the new shapes are reported).")(command)


def input_shape_option(command):
    return click.option("--input-shape", "input_shape", multiple=True, metavar="NAME:DIMS",
                        help="Bind an input's symbolic dims, e.g. images:1x3x640x640 (-1 keeps a dim symbolic; "
                             "repeatable).")(command)


@main.command()
@click.argument("model", type=click.Path())
@click.option("--json", "json_path", type=click.Path(), help="Also write the groups as JSON to this file.")
@click.option("--html", "html_path", type=click.Path(),
              help="Also write a page of the groups in layer order, coloured by prunable share or blocking reason.")
@input_shape_option
@allow_io_change_option
@user_errors
def analyze(model, json_path, html_path, input_shape, allow_io_change):
    """Show the pruning groups of MODEL, their cost, and why the others can't be pruned."""
    from . import graph, groups
    from .report import analysis_html, analysis_json, analysis_text
    analysis = groups.analyze(graph.load(model, input_shapes=graph.parse_input_shapes(input_shape)),
                              allow_io_change=allow_io_change)
    click.echo(analysis_text(analysis))
    click.echo(graph.describe_sizes(analysis.model))
    if json_path:
        write_json(json_path, analysis_json(analysis))
    if html_path:
        write_text(html_path, analysis_html(analysis))


@main.command()
@click.argument("model", type=click.Path())
@click.option("--data", type=click.Path(), help="Certify on these inputs (.npz or a folder of .npy) instead of "
                                                "generated ones.")
@click.option("--subsets", default=3, show_default=True, help="Random ZIG subsets checked per group.")
@click.option("--seed", default=0, show_default=True, help="Seed for subsets and inputs.")
@click.option("--json", "json_path", type=click.Path(), help="Write the certificate as JSON to this file.")
@input_shape_option
@allow_io_change_option
@quiet_option
@user_errors
def verify(model, data, subsets, seed, json_path, input_shape, allow_io_change):
    """Certify that cutting each prunable group of MODEL gives the outputs of zeroing it."""
    from . import graph, verify as verifier
    from .train import load_data
    shapes = graph.parse_input_shapes(input_shape)
    dense = graph.load(model, strict=True, input_shapes=shapes)
    what = f"verify: {dense.name}"
    dataset = load_data(data, dense.proto) if data else None
    arrays = {**dataset.arrays, **dataset.constants} if dataset else None
    feeds = verifier.certified_inputs(dense, arrays, data, np.random.default_rng(seed), what)
    del dense  # the certificate's child process loads its own: a large model is not held twice
    cert = verifier.certify_file(model, feeds, shapes, subsets=subsets, seed=seed, what=what,
                                 allow_io_change=allow_io_change)
    for check in cert.failures:
        detail = check.error or f"rel diff {check.rel_diff:.3g}"
        click.echo(f"FAIL {check.group} ({check.removed} ZIGs cut): {detail}")
    click.echo(f"verified {cert.groups_verified}/{cert.groups_prunable} prunable groups, "
               f"{cert.units_verified}/{cert.units_total} erasable branches, "
               f"max rel diff {cert.max_rel_diff:.3g} (tolerance {verifier.TOLERANCE:g})")
    if json_path:
        write_json(json_path, cert.to_json())
    sys.exit(0 if cert.passed else 1)


def _group_targets(values):
    """--group-target GLOB=F values as {glob: fraction}, in the order given."""
    out = {}
    for value in values:
        pattern, _, fraction = value.rpartition("=")
        try:
            out[pattern] = float(fraction)
        except ValueError:
            raise OptionError(f"--group-target {value!r}: expected GLOB=FRACTION, e.g. '*mlp*=0.3'") from None
        if not pattern:
            raise OptionError(f"--group-target {value!r}: expected GLOB=FRACTION, e.g. '*mlp*=0.3'")
    return out


def prune_options(defaults=None, only=None):
    """The click options of PruneOptions' fields (their help, type, choices and default), `only` some of them
    with other `defaults` for a command that shares them (demo)."""
    from .prune import PruneOptions, flag

    def decorate(command):
        for f in reversed(dataclasses.fields(PruneOptions)):
            meta = f.metadata
            if not meta.get("cli") or (only is not None and f.name not in only):
                continue
            default = (defaults or {}).get(f.name, f.default)
            # choices are checked by PruneOptions, so a wrong one is a one-line error like any other
            metavar = f"[{'|'.join(meta['choices'])}]" if meta["choices"] else None
            if meta["type"] is bool:  # a switch: --flag sets it
                command = click.option(flag(f.name), f.name, is_flag=True, default=default, help=meta["help"])(command)
                continue
            command = click.option(flag(f.name), f.name, type=meta["type"] or str, default=default,
                                   metavar=metavar, help=meta["help"],
                                   show_default=meta["show_default"] and default is not None)(command)
        return command
    return decorate


@main.command()
@click.argument("model", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="Training data: .npz or a folder of .npy files.")
@click.option("--val", type=click.Path(), help="Validation data, same format: the metric before and after.")
@click.option("-o", "--output", type=click.Path(), help="Pruned model path [MODEL.pruned.onnx].")
@prune_options()
@click.option("--report", "report_dir", type=click.Path(), help="Write report.json/report.md (and keep work files) here.")
@click.option("--resume", "resume_dir", type=click.Path(), help="Continue an interrupted run from its report folder.")
@input_shape_option
@click.option("--group-target", "group_target", multiple=True, metavar="GLOB=F",
              help="Groups whose id or layer matches GLOB (fnmatch) lose fraction F of their channels together, "
                   "outside --target-sparsity's budget, e.g. '*self_attn*=0.25' (repeatable; the first match wins).")
@quiet_option
@user_errors
def prune(model, data, val, output, report_dir, resume_dir, input_shape, group_target, **settings):
    """Train MODEL with a sparse optimizer on DATA and write the smaller, certified model."""
    from . import graph
    from .prune import PruneOptions, prune as run_prune
    from .report import summary_text, write_report
    options = PruneOptions(**settings, input_shapes=graph.parse_input_shapes(input_shape),
                           group_targets=_group_targets(group_target))
    workdir = resume_dir or report_dir
    result = run_prune(model, data, output, val=val, options=options, workdir=workdir,
                       resume=resume_dir is not None, log=log_line)
    if not result.is_root:
        return
    click.echo(summary_text(result))
    if workdir:
        write_report(result, workdir)


# BatchNorm on batch statistics (the default) lets SGD run at 0.02, ten times the safe default of ce+distill
@main.command()
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="The latency table (JSON) to write.")
@click.option("--batch", type=int, default=64, show_default=True, help="Batch the model will serve.")
@click.option("--threads", type=int, help="onnxruntime intra-op threads [onnxruntime's default].")
@click.option("--provider", default="CPUExecutionProvider", show_default=True, help="onnxruntime execution provider.")
@click.option("--rounds", type=int, default=20, show_default=True,
              help="Timed runs of each cut model (round-robin with the dense one; more on a noisy machine).")
@user_errors
def profile(model, output, batch, threads, provider, rounds):
    """Measure MODEL's latency table on this machine: what each prunable group saves at each width.
    Needs onnxruntime only (no training build): run it where the model will be served."""
    import onnxruntime
    from . import graph, groups
    from .errors import OptionError
    from .latency import measure_table
    if batch < 1 or rounds < 1 or (threads is not None and threads < 1):
        raise OptionError("--batch, --threads and --rounds must be at least 1")
    if provider not in onnxruntime.get_available_providers():
        raise OptionError(f"--provider {provider}: not in this onnxruntime "
                          f"({', '.join(onnxruntime.get_available_providers())})")
    analysis = groups.analyze(graph.load(model, strict=True))
    table = measure_table(analysis, batch=batch, threads=threads, provider=provider, rounds=rounds,
                          log=lambda line: click.echo(line, err=True))
    table.save(output)
    block, narrow = table.auto_rounding()
    click.echo(f"{output}: {len(table.groups)} groups at batch {table.batch}, dense {table.dense_ms:.2f} ms; "
               f"--round-to auto would pick {block}{'' if narrow else ', no widths below it'}")


DEMO = {"target_flops": 0.5, "loss": "ce+distill", "lr": 0.02, "epochs": 8, "batch_size": 64, "optimizer": "hesso",
        "round_to": 8}


@main.command()
@click.option("--report", "report_dir", type=click.Path(), help="Write report.json/report.md here.")
@click.option("-o", "--output", type=click.Path(), default="fmnist_resnet.pruned.onnx", show_default=True)
@prune_options(defaults=DEMO, only={"epochs"})
@quiet_option
@user_errors
def demo(report_dir, output, **settings):
    """Prune half the FLOPs of the bundled Fashion-MNIST ResNet with HESSO (cross-entropy plus distillation
    from the dense model), verify, compare."""
    from .prune import PruneOptions, prune as run_prune
    from .report import summary_text, write_report
    options = PruneOptions(**{**DEMO, **settings})
    result = run_prune(os.path.join(DATA, "fmnist_resnet.onnx"), os.path.join(DATA, "fmnist_train.npz"), output,
                       val=os.path.join(DATA, "fmnist_test.npz"), options=options, workdir=report_dir,
                       log=log_line)
    click.echo(summary_text(result))
    if report_dir:
        write_report(result, report_dir)


@main.command()
@click.argument("dense", type=click.Path())
@click.argument("pruned", type=click.Path())
@click.option("--data", type=click.Path(), help="Validation data: adds the metric (accuracy or MSE).")
@click.option("--batch", type=int, default=32, show_default=True, help="The large batch for latency.")
@click.option("--repeats", type=int, default=30, show_default=True, help="Timed runs per latency (median).")
@click.option("--json", "json_path", type=click.Path(), help="Write the comparison as JSON.")
@input_shape_option
@quiet_option
@user_errors
def bench(dense, pruned, data, batch, repeats, json_path, input_shape):
    """Compare DENSE and PRUNED: params, FLOPs, file size, CPU latency (batch 1 and N), metric."""
    from . import graph
    from .prune import evaluate, metric_kind, session_model
    from .graph import session
    from .report import comparison_rows, format_table, profile_pair
    from .train import load_data
    shapes = graph.parse_input_shapes(input_shape)
    result = dict(zip(("dense", "pruned"), profile_pair([dense, pruned], batch=batch, repeats=repeats,
                                                        input_shapes=shapes)))
    kind = None
    if data:
        dataset = load_data(data, graph.load(dense, strict=True).proto)
        kind = metric_kind(dataset, None)
        teacher = session_model(session(dense))
        result["dense"]["metric"] = evaluate(teacher, dataset, kind, teacher)
        result["pruned"]["metric"] = evaluate(session_model(session(pruned)), dataset, kind, teacher)
    result["metric"] = kind
    result["ideal_speedup"] = result["dense"]["flops"] / max(result["pruned"]["flops"], 1)
    for key in ("batch1", "batchN"):
        result[f"speedup_{key}"] = result["dense"]["latency_ms"][key] / result["pruned"]["latency_ms"][key]
    click.echo(format_table(["", "dense", "pruned", "ratio"], comparison_rows(result["dense"], result["pruned"], kind)))
    click.echo(f"\nideal speed-up (FLOPs ratio) {result['ideal_speedup']:.2f}x; realised: batch 1 "
               f"{result['speedup_batch1']:.2f}x, batch {batch} {result['speedup_batchN']:.2f}x (lower quartiles of "
               f"{repeats} runs each, timed round-robin)")
    if json_path:
        write_json(json_path, result)
