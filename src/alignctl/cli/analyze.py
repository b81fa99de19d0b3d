"""``alignctl analyze``: table, verdict, recommendation, machine outputs and CI gates."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from alignctl.cli.common import (
    check_outputs,
    cli_errors,
    err_console,
    figure_link,
    heavy_imports,
    note_line,
    out_console,
    parse_ints,
)
from alignctl.errors import GateFailed, InputError

Opt = typer.Option
FORMATS = ("table", "markdown", "csv", "json")


@cli_errors
def analyze(
    path: Annotated[
        # readable=False: an unreadable path is the library's one-line error, not a usage box
        Path, typer.Argument(help="Run directory, checkpoint folder or file.", readable=False)
    ],
    config: Annotated[Path | None, Opt(help="alignctl.yaml to use instead of the run's.")] = None,
    model: Annotated[str | None, Opt(help="Architecture name or file.py:callable.")] = None,
    data: Annotated[str | None, Opt(help="Task name or data file (.npz/.safetensors/.pt).")] = None,
    weights: Annotated[
        str | None, Opt(help="raw | ema: which copy of the weights (default raw).")
    ] = None,
    state_key: Annotated[
        str | None, Opt(help="Checkpoint key or prefix holding the weights (net, model_ema).")
    ] = None,
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
        # str, not Path: Path("out.png/") would drop the slash that makes it a folder
        str | None, Opt(help="Write metric trajectories as .png, .svg or .pdf.")
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
    baseline: Annotated[
        Path | None, Opt(help="Baseline JSON report for the drop and rise gates.")
    ] = None,
    max_drop: Annotated[
        list[str] | None, Opt(help="Gate: METRIC=DELTA drop from baseline.")
    ] = None,
    max_rise: Annotated[
        list[str] | None,
        Opt(help="Gate: METRIC=DELTA rise from baseline (e.g. jacobian_norm)."),
    ] = None,
    require_verdict: Annotated[
        str | None, Opt(help="Gate: learning|memorising|generalising|robust.")
    ] = None,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="No table; only outputs and errors.")] = False,
    fmt: Annotated[
        str | None,
        Opt(
            "--format",
            metavar="table|markdown|csv|json",
            help="What goes to stdout (default table; same as --json - etc. for the others).",
        ),
    ] = None,
    wide: Annotated[
        bool, Opt("--wide", help="Every column, however wide (default: fit the terminal).")
    ] = False,
    output: Annotated[
        str | None, Opt(help="Which model output is the logits: a key or an index.")
    ] = None,
    max_memory: Annotated[
        str | None,
        Opt(
            help="Working memory of one batch, e.g. 512MiB (the default on the CPU; on CUDA: "
            "half the free memory)."
        ),
    ] = None,
    threads: Annotated[int | None, Opt(help="CPU threads (default: 1 for small models).")] = None,
    sketch: Annotated[
        int | None,
        Opt(
            help="Whole-Jacobian metrics from K random probes per sample (default: K=16 above "
            "256 classes; 0, or classes <= max(2K, 16): exact); errors go to metrics_error."
        ),
    ] = None,  # fmt: skip
    follow: Annotated[
        bool, Opt(help="Watch the run while it trains; analyse checkpoints as they land.")
    ] = False,
    cache: Annotated[
        Path | None,
        Opt(
            help="Keep per-checkpoint results in DIR (default: RUN/.alignctl-cache); re-runs "
            "measure only new checkpoints."
        ),
    ] = None,
    no_cache: Annotated[bool, Opt("--no-cache", help="Neither read nor write the cache.")] = False,
) -> None:
    """Analyse every checkpoint of a run: alignment metrics, verdict, recommendation."""
    with heavy_imports():  # torch: without full collections of its objects (common.py)
        from alignctl.report.analysis import resolve_metrics
        from alignctl.report.gates import check_gate_options, evaluate_gates
        from alignctl.report.sharded import analyze as run_analysis  # over torchrun's ranks
        from alignctl.runs.run import open_run
        from alignctl.runs.validate import check_pgd, check_run_labels

    # every usage error before any work: options, gates, then the outputs' destinations
    names = resolve_metrics(metrics)
    at_steps = parse_ints(at, "--at")
    if dist is not None and (plot is None or dist not in names):
        raise InputError("--dist METRIC needs --plot and a metric that is measured (--metrics)")
    if plot is not None:
        from alignctl.report.figures import check_format

        check_format(plot)
    check_pgd(eps, alpha, pgd_steps)
    if max_memory is not None:
        from alignctl.geometry.memory import parse_bytes

        parse_bytes(max_memory)
    check_gate_options(names, fail_under=fail_under or (), fail_over=fail_over or (),
                       baseline=baseline, max_drop=max_drop or (), max_rise=max_rise or (),
                       require_verdict=require_verdict, robustness=robustness)  # fmt: skip
    outputs = check_outputs(
        {"--json": json_out, "--csv": csv_out, "--markdown": markdown, "--plot": plot,
         "GITHUB_STEP_SUMMARY": os.environ.get("GITHUB_STEP_SUMMARY")},
        append=("GITHUB_STEP_SUMMARY",), files_only=("--plot",),
    )  # fmt: skip
    stdout_taken = "-" in (json_out, csv_out, markdown)
    if no_cache and cache is not None:  # which one was meant cannot be told
        raise InputError("--cache DIR and --no-cache contradict each other; give one")
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown --format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt is not None and stdout_taken:  # two of --json/--csv/--markdown -: check_outputs
        raise InputError("only one of --format, --json -, --csv -, --markdown - can use stdout")
    from alignctl.report.monitor_log import check_log_options, is_monitor_run, report_from_log

    def opened():
        run = open_run(
            path, config=config, model=model, data=data, weights=weights, state_key=state_key
        )
        check_run_labels(run)
        outputs.refuse_inputs([*run.input_files(), *([baseline] if baseline else [])])
        return run

    from alignctl.report.cache import default_cache

    # on by default, in the run's folder (a folder that cannot be written: memory only, quietly)
    cache_at = lambda run: None if no_cache else (cache or default_cache(run))  # noqa: E731
    options = dict(split=split, samples=samples, batch_size=batch_size, device=device,
                   metrics=metrics, robustness=robustness, eps=eps, alpha=alpha,
                   steps=pgd_steps, output=output, max_memory=max_memory,
                   threads=threads, keep_samples=keep_samples or dist is not None,
                   sketch=sketch)  # fmt: skip
    given = {
        "--split": split != "train", "--samples": samples is not None,
        "--robustness": robustness, "--eps": eps is not None, "--alpha": alpha is not None,
        "--pgd-steps": pgd_steps != 10, "--sketch": sketch is not None,
        "--keep-samples": keep_samples, "--dist": dist is not None,
        "--weights": weights is not None, "--state-key": state_key is not None,
        "--output": output is not None, "--config": config is not None,
        "--model": model is not None, "--data": data is not None,
    }  # fmt: skip
    log_names = None if metrics == "standard" else names  # what a monitor's log cannot give:
    check_log = lambda r: check_log_options(r, given, log_names)  # noqa: E731 (followed too)
    if follow:
        from alignctl.cli.live import follow as live_follow

        report = live_follow(path, opened, options, cache_at, no_cache,
                             quiet or stdout_taken, check_log)  # fmt: skip
    elif is_monitor_run(path) and not (config or model or data):
        report = report_from_log(path)  # a run made only of the monitor's alignment.jsonl
        check_log(report)
    else:
        run = opened()
        console = err_console()
        from rich.progress import Progress

        with Progress(console=console, transient=True,
                      disable=quiet or not console.is_terminal) as bar:  # fmt: skip
            task = bar.add_task("checkpoints", total=len(run.checkpoints))
            report = run_analysis(
                # per-sample values are not cached: they would cover only new checkpoints
                run, **options, cache=None if options["keep_samples"] else cache_at(run),
                on_checkpoint=lambda entry, i, n: bar.update(task, completed=i),
            )  # fmt: skip
    report["gates"] = evaluate_gates(
        report, fail_under=fail_under or (), fail_over=fail_over or (), baseline=baseline,
        max_drop=max_drop or (), require_verdict=require_verdict, max_rise=max_rise or (),
    )  # fmt: skip
    report["passed"] = all(g["passed"] for g in report["gates"])
    if not quiet:
        for note in report.get("notes", []):
            note_line(note)
    show = fmt or (None if quiet or stdout_taken else "table")
    _emit(report, outputs, show, wide, (plot, dist, at_steps, markdown))
    failed = [g for g in report["gates"] if not g["passed"]]
    from alignctl.report.cells import gate_text

    for g in failed:
        note_line(gate_text(g), prefix="gate failed")
    outputs.finish()  # an output that failed is exit 2, after the gates have been said
    if failed:
        raise GateFailed()


def _emit(report, outputs, show, wide, figure) -> None:
    """Outputs: ``show`` (table | markdown | csv | json | None) on stdout, then the files; each
    file is written even if another fails (the caller's ``outputs.finish()`` names them)."""
    from alignctl.report import render

    plot, dist, at, markdown = figure
    link = f"\n![alignctl analyze]({figure_link(plot, markdown)})\n" if plot and markdown else ""
    writers = {"json": render.to_json, "csv": render.to_csv, "markdown": render.to_markdown}
    if show == "table":
        _print_table(report, wide)
    elif show:
        sys.stdout.write(writers[show](report))
        sys.stdout.flush()
    outputs.write("--json", lambda: render.to_json(report))
    outputs.write("--csv", lambda: render.to_csv(report))
    outputs.write("--markdown", lambda: render.to_markdown(report) + link)
    outputs.call("--plot", lambda path: render.plot(report, path, dist=dist, at=at))
    outputs.append("GITHUB_STEP_SUMMARY", lambda: "\n" + render.step_summary(report))


def _print_table(report: dict, wide: bool) -> None:
    """The table fitted to the terminal (``COLUMNS`` when piped, 80 without it); rich drops
    colour under NO_COLOR and when not on a terminal."""
    from alignctl.report import render

    out = out_console()
    table = render.rich_table(
        report, width=None if wide else out.width, wide=wide, hint="--wide shows all"
    )
    # wider than the terminal when it must (--wide, or one too narrow for step and verdict):
    # nothing is cut
    out.width = max(out.width, render.table_width(report, None if wide else out.width, wide))
    out.print(table)
    out.print(render.rich_panel(report, width=out.width))
