"""The `onnxoto` command. User errors print one line and exit with code 2."""
import functools
import json
import os
import sys

import click

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


@main.command()
@click.argument("model", type=click.Path())
@click.option("--json", "json_path", type=click.Path(), help="Also write the groups as JSON to this file.")
@click.option("--html", "html_path", type=click.Path(),
              help="Also write a page of the groups in layer order, coloured by prunable share or blocking reason.")
@user_errors
def analyze(model, json_path, html_path):
    """Show the pruning groups of MODEL, their cost, and why the others can't be pruned."""
    from . import graph, groups
    from .report import analysis_json, analysis_text
    from .report.analysis_html import analysis_html
    analysis = groups.analyze(graph.load(model))
    click.echo(analysis_text(analysis))
    if json_path:
        write_json(json_path, analysis_json(analysis))
    if html_path:
        write_text(html_path, analysis_html(analysis))


@main.command()
@click.argument("model", type=click.Path())
@click.option("--subsets", default=3, show_default=True, help="Random ZIG subsets checked per group.")
@click.option("--seed", default=0, show_default=True, help="Seed for subsets and inputs.")
@click.option("--json", "json_path", type=click.Path(), help="Write the certificate as JSON to this file.")
@quiet_option
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


@main.command()
@click.argument("model", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="Training data: .npz or a folder of .npy files.")
@click.option("--val", type=click.Path(), help="Validation data, same format: the metric before and after.")
@click.option("-o", "--output", type=click.Path(), help="Pruned model path [MODEL.pruned.onnx].")
@click.option("--target-sparsity", type=float, help="Fraction of channels (ZIGs) to remove [0.5].")
@click.option("--target-flops", type=float, help="Fraction of FLOPs to remove (instead of --target-sparsity).")
@click.option("--optimizer", type=click.Choice(["hesso", "hesso-cric", "dhspg"]), default="hesso", show_default=True)
@click.option("--epochs", type=int, default=5, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, help="Learning rate [sgd 0.01 (0.001 with distillation), adamw 0.001].")
@click.option("--base", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True,
              help="Base optimizer whose direction HESSO follows.")
@click.option("--loss", type=click.Choice(["ce", "mse", "distill", "ce+distill"]),
              help="Default: ce for integer labels, mse for float labels, distill without labels. ce+distill: "
                   "cross-entropy plus KL divergence from the original model's softened outputs.")
@click.option("--distill-weight", type=float, default=1.0, show_default=True,
              help="ce+distill: factor of the KL term.")
@click.option("--temperature", type=float, default=4.0, show_default=True,
              help="ce+distill: softmax temperature of the KL term.")
@click.option("--round-to", type=int, default=1, show_default=True, help="Keep channel counts a multiple of K.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--report", "report_dir", type=click.Path(), help="Write report.json/report.md (and keep work files) here.")
@click.option("--resume", "resume_dir", type=click.Path(), help="Continue an interrupted run from its report folder.")
@click.option("--erase", type=float, default=0.0, show_default=True,
              help="Fraction of erasable branches (residual or Concat) to remove whole (OTOv3).")
@click.option("--saliency-scope", default="group", show_default=True,
              help="global: rank all channels in one list; group: each against the mean of its own layer.")
@click.option("--batchnorm", type=click.Choice(["batch", "frozen"]),
              help="BatchNorm in training: batch statistics, running ones recalibrated after (default in one "
                   "process), or frozen running statistics (default on several ranks).")
@click.option("--seed", type=int, default=0, show_default=True)
@quiet_option
@user_errors
def prune(model, data, val, output, target_sparsity, target_flops, optimizer, epochs, batch_size, lr, base, loss,
          distill_weight, temperature, round_to, device, report_dir, resume_dir, erase, saliency_scope, batchnorm,
          seed):
    """Train MODEL with a sparse optimizer on DATA and write the smaller, certified model."""
    from .prune import PruneOptions, prune as run_prune
    from .report.prune import summary_text, write_report
    options = PruneOptions(target_sparsity=0.5 if target_sparsity is None else target_sparsity,
                           target_flops=target_flops, optimizer=optimizer, epochs=epochs, batch_size=batch_size,
                           lr=lr, base=base, loss=loss, distill_weight=distill_weight, temperature=temperature,
                           round_to=round_to, device=device, seed=seed, erase=erase,
                           saliency_scope=saliency_scope, batchnorm=batchnorm)
    workdir = resume_dir or report_dir
    result = run_prune(model, data, output, val=val, options=options, workdir=workdir,
                       resume=resume_dir is not None, log=log_line)
    if not result.is_root:
        return
    click.echo(summary_text(result))
    if workdir:
        write_report(result, workdir)


@main.command()
@click.option("--report", "report_dir", type=click.Path(), help="Write report.json/report.md here.")
@click.option("-o", "--output", type=click.Path(), default="fmnist_resnet.pruned.onnx", show_default=True)
@click.option("--epochs", type=int, default=8, show_default=True)
@quiet_option
@user_errors
def demo(report_dir, output, epochs):
    """Prune half the FLOPs of the bundled Fashion-MNIST ResNet with HESSO (cross-entropy plus distillation
    from the dense model), verify, compare."""
    from .prune import PruneOptions, prune as run_prune
    from .report.prune import summary_text, write_report
    data = DATA
    # BatchNorm on batch statistics (the default) lets SGD run at 0.02, ten times the safe default of ce+distill
    options = PruneOptions(target_flops=0.5, loss="ce+distill", lr=0.02, epochs=epochs, batch_size=64,
                           optimizer="hesso", round_to=8)
    result = run_prune(os.path.join(data, "fmnist_resnet.onnx"), os.path.join(data, "fmnist_train.npz"), output,
                       val=os.path.join(data, "fmnist_test.npz"), options=options, workdir=report_dir,
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
@quiet_option
@user_errors
def bench(dense, pruned, data, batch, repeats, json_path):
    """Compare DENSE and PRUNED: params, FLOPs, file size, CPU latency (batch 1 and N), metric."""
    from . import graph
    from .prune.evaluate import evaluate, metric_kind, session_model
    from .report.measure import profile, session
    from .report.prune import comparison_rows
    from .report.table import format_table
    from .train import load_data
    result = {"dense": profile(dense, batch=batch, repeats=repeats), "pruned": profile(pruned, batch=batch, repeats=repeats)}
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
               f"{result['speedup_batch1']:.2f}x, batch {batch} {result['speedup_batchN']:.2f}x (medians of {repeats} runs)")
    if json_path:
        write_json(json_path, result)
