"""``alignctl analyze``: table, verdict, recommendation, machine outputs and CI gates."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from alignctl.cli.common import cli_errors, err_console, write_output
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
    plot: Annotated[Path | None, Opt(help="Write metric trajectories as a PNG.")] = None,
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
    follow: Annotated[
        bool, Opt(help="Watch the run while it trains; analyse checkpoints as they land.")
    ] = False,
    cache: Annotated[
        Path | None, Opt(help="Per-checkpoint results cache (default RUN/.alignctl-cache).")
    ] = None,
    no_cache: Annotated[bool, Opt("--no-cache", help="Neither read nor write the cache.")] = False,
) -> None:
    """Analyse every checkpoint of a run: alignment metrics, verdict, recommendation."""
    from alignctl.report.analysis import analyze as run_analysis
    from alignctl.report.analysis import resolve_metrics
    from alignctl.report.gates import evaluate_gates, load_baseline
    from alignctl.runs.run import open_run

    resolve_metrics(metrics)  # usage errors before any work
    if baseline is not None:
        load_baseline(baseline)
    if require_verdict is not None:
        from alignctl.report.verdict import ORDER

        if require_verdict not in ORDER:
            raise InputError(f"unknown verdict {require_verdict!r}; valid: {', '.join(ORDER)}")
    stdout_taken = "-" in (json_out, csv_out, markdown)
    if sum(d == "-" for d in (json_out, csv_out, markdown)) > 1:
        raise InputError("only one of --json, --csv, --markdown can write to stdout (-)")
    from alignctl.report.monitor_log import is_monitor_run, report_from_log

    if not is_monitor_run(path):  # gate usage errors before any work (or cache write)
        names = resolve_metrics(metrics)
        dry = {"checkpoints": [{"metrics": dict.fromkeys(names)}], "metric_names": names,
               "verdict": None}  # fmt: skip
        evaluate_gates(dry, fail_under=fail_under or (), fail_over=fail_over or (),
                       baseline=baseline, max_drop=max_drop or ())  # fmt: skip

    opened = lambda: open_run(path, config=config, model=model, data=data)  # noqa: E731
    cache_at = lambda run: None if no_cache else (cache or Path(run.root) / ".alignctl-cache")  # noqa: E731
    options = dict(split=split, samples=samples, batch_size=batch_size, device=device,
                   metrics=metrics, robustness=robustness, eps=eps, alpha=alpha,
                   steps=pgd_steps)  # fmt: skip
    if follow:
        report = _follow(path, opened, options, cache_at, no_cache, quiet or stdout_taken)
    elif is_monitor_run(path) and not (config or model or data):
        report = report_from_log(path)  # a run made only of the monitor's alignment.jsonl
    else:
        run = opened()
        console = err_console()
        from rich.progress import Progress

        with Progress(console=console, transient=True,
                      disable=quiet or not console.is_terminal) as bar:  # fmt: skip
            task = bar.add_task("checkpoints", total=len(run.checkpoints))
            report = run_analysis(
                run, **options, cache=cache_at(run),
                on_checkpoint=lambda entry, i, n: bar.update(task, completed=i),
            )  # fmt: skip
    report["gates"] = evaluate_gates(
        report, fail_under=fail_under or (), fail_over=fail_over or (), baseline=baseline,
        max_drop=max_drop or (), require_verdict=require_verdict,
    )  # fmt: skip
    report["passed"] = all(g["passed"] for g in report["gates"])
    if not quiet:
        for note in report.get("notes", []):
            typer.echo(f"note: {note}", err=True)
    _emit(report, json_out, csv_out, markdown, plot, quiet or stdout_taken)
    failed = [g for g in report["gates"] if not g["passed"]]
    for g in failed:
        typer.echo(f"gate failed: {g['rule']}: value {g['value']}", err=True)
    if failed:
        raise GateFailed()


def _emit(report, json_out, csv_out, markdown, plot, quiet) -> None:
    from alignctl.report import render

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
        write_output(markdown, render.to_markdown(report))
    if plot:
        render.plot(report, plot)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as fh:
            fh.write(render.to_markdown(report))


def _follow(path, opened, options, cache_at, no_cache, quiet):
    """``--follow``: a live table on a terminal (rich Live), one line per new checkpoint when
    piped; returns the final report."""
    from rich.console import Console
    from rich.live import Live

    from alignctl.report import render
    from alignctl.report.analysis import analyze as run_analysis
    from alignctl.report.cache import Cache
    from alignctl.report.follow import follow_run, plain_line

    out, printed, caches = Console(), set(), {}
    live = Live(console=out, auto_refresh=False) if out.is_terminal and not quiet else None

    def analyse(run):
        if "c" not in caches:  # in memory at least: each pass measures only new checkpoints
            caches["c"] = Cache(None if no_cache else cache_at(run))
        return run_analysis(run, **options, cache=caches["c"])

    def show(report):
        if quiet:
            return
        if live is not None:
            live.update(render.rich_table(report), refresh=True)
            return
        for ck in report["checkpoints"]:
            if ck["name"] not in printed:
                printed.add(ck["name"])
                typer.echo(plain_line(ck, report["metric_names"]))

    if live is not None:
        live.start()
    try:
        report = follow_run(path, open_run=opened, analyse=analyse, on_report=show)
    finally:
        if live is not None:
            live.stop()
    if report is None:
        raise InputError(f"the run in {path} finished without a checkpoint to analyse")
    return report
