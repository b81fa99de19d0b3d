"""``alignctl analyze``: table, verdict, recommendation, machine outputs and CI gates."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from alignctl.cli.common import cli_errors, err_console, figure_link, parse_ints, write_output
from alignctl.errors import GateFailed, InputError

Opt = typer.Option


@cli_errors
def analyze(
    path: Annotated[Path, typer.Argument(help="Run directory, checkpoint folder or file.")],
    config: Annotated[Path | None, Opt(help="alignctl.yaml to use instead of the run's.")] = None,
    model: Annotated[str | None, Opt(help="Architecture name or file.py:callable.")] = None,
    data: Annotated[str | None, Opt(help="Task name or data file (.npz/.safetensors/.pt).")] = None,
    split: Annotated[str, Opt(help="Measure on train or test data.")] = "train",
    samples: Annotated[int | None, Opt(help="Deterministic subset of N samples.", min=1)] = None,
    batch_size: Annotated[int | None, Opt(help="Samples per Jacobian batch.", min=1)] = None,
    device: Annotated[str, Opt(help="auto | cpu | cuda | mps")] = "auto",
    metrics: Annotated[str, Opt(help="fast | standard | full | name,name,...")] = "standard",
    robustness: Annotated[
        bool, Opt(help="Adversarial accuracy under l_inf PGD (test split).")
    ] = False,
    eps: Annotated[float | None, Opt(help="PGD radius (default 4/255 of the input range).")] = None,
    alpha: Annotated[float | None, Opt(help="PGD step size (default eps/2).")] = None,
    pgd_steps: Annotated[int, Opt(help="PGD steps.", min=1)] = 10,
    json_out: Annotated[
        str | None, Opt("--json", help="Write the JSON report (- = stdout).")
    ] = None,
    csv_out: Annotated[str | None, Opt("--csv", help="Write a CSV table (- = stdout).")] = None,
    markdown: Annotated[str | None, Opt(help="Write a Markdown summary (- = stdout).")] = None,
    plot: Annotated[
        Path | None, Opt(help="Write metric trajectories as .png, .svg or .pdf.")
    ] = None,
    keep_samples: Annotated[
        bool, Opt(help="Keep per-sample values in the JSON (under samples).")
    ] = False,
    dist: Annotated[
        str | None, Opt(help="With --plot: per-sample distribution of METRIC (keeps samples).")
    ] = None,
    at: Annotated[
        str | None, Opt(help="Steps for --dist, e.g. 0,400 (default first,last).")
    ] = None,
    fail_under: Annotated[
        list[str] | None, Opt(help="Gate: METRIC=VALUE, last mean >= VALUE.")
    ] = None,
    fail_over: Annotated[
        list[str] | None, Opt(help="Gate: METRIC=VALUE, last mean <= VALUE.")
    ] = None,
    baseline: Annotated[Path | None, Opt(help="Baseline JSON report for --max-drop.")] = None,
    max_drop: Annotated[
        list[str] | None, Opt(help="Gate: METRIC=DELTA drop from baseline.")
    ] = None,
    require_verdict: Annotated[
        str | None, Opt(help="Gate: learning|memorising|generalising|robust.")
    ] = None,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="No table; only outputs and errors.")] = False,
) -> None:
    """Analyse every checkpoint of a run: alignment metrics, verdict, recommendation."""
    from alignctl.report.analysis import analyze as run_analysis
    from alignctl.report.analysis import resolve_metrics
    from alignctl.report.gates import evaluate_gates, load_baseline
    from alignctl.runs.run import open_run

    names = resolve_metrics(metrics)  # usage errors before any work
    at_steps = parse_ints(at, "--at")
    if dist is not None and (plot is None or dist not in names):
        raise InputError("--dist METRIC needs --plot and a metric that is measured (--metrics)")
    if plot is not None:
        from alignctl.report.figures import check_format

        check_format(plot)
    if baseline is not None:
        load_baseline(baseline)
    if require_verdict is not None:
        from alignctl.report.verdict import ORDER

        if require_verdict not in ORDER:
            raise InputError(f"unknown verdict {require_verdict!r}; valid: {', '.join(ORDER)}")
    stdout_taken = "-" in (json_out, csv_out, markdown)
    if sum(d == "-" for d in (json_out, csv_out, markdown)) > 1:
        raise InputError("only one of --json, --csv, --markdown can write to stdout (-)")
    run = open_run(path, config=config, model=model, data=data)
    console = err_console()
    from rich.progress import Progress

    with Progress(console=console, transient=True, disable=quiet or not console.is_terminal) as bar:
        task = bar.add_task("checkpoints", total=len(run.checkpoints))
        report = run_analysis(
            run, split=split, samples=samples, batch_size=batch_size, device=device,
            metrics=metrics, robustness=robustness, eps=eps, alpha=alpha, steps=pgd_steps,
            on_checkpoint=lambda entry, i, n: bar.update(task, completed=i),
            keep_samples=keep_samples or dist is not None,
        )  # fmt: skip
    report["gates"] = evaluate_gates(
        report, fail_under=fail_under or (), fail_over=fail_over or (), baseline=baseline,
        max_drop=max_drop or (), require_verdict=require_verdict,
    )  # fmt: skip
    report["passed"] = all(g["passed"] for g in report["gates"])
    if not quiet:
        for note in report.get("notes", []):
            typer.echo(f"note: {note}", err=True)
    _emit(report, json_out, csv_out, markdown, (plot, dist, at_steps), quiet or stdout_taken)
    failed = [g for g in report["gates"] if not g["passed"]]
    for g in failed:
        typer.echo(f"gate failed: {g['rule']}: value {g['value']}", err=True)
    if failed:
        raise GateFailed()


def _emit(report, json_out, csv_out, markdown, figure, quiet) -> None:
    from alignctl.report import render

    plot, dist, at = figure
    if plot:
        render.plot(report, plot, dist=dist, at=at)
    if not quiet:
        from rich.console import Console

        out = Console()
        if not out.is_terminal:  # piped or redirected: keep whole numbers, no ellipses
            out.width = max(out.width, 160)
        out.print(render.rich_table(report))
        out.print(render.rich_panel(report))
    if json_out:
        write_output(json_out, json.dumps(report, indent=2, allow_nan=False) + "\n")
    if csv_out:
        write_output(csv_out, render.to_csv(report))
    if markdown:
        link = f"\n![alignctl analyze]({figure_link(plot, markdown)})\n" if plot else ""
        write_output(markdown, render.to_markdown(report) + link)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as fh:
            fh.write(render.to_markdown(report))
