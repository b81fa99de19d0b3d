"""``alignctl compare``: runs side by side: trajectories overlaid, differences at matched steps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alignctl.cli.common import (
    check_outputs,
    cli_errors,
    err_console,
    figure_link,
    out_console,
    parse_ints,
    printable,
)
from alignctl.errors import InputError

Opt = typer.Option


@cli_errors
def compare(
    runs: Annotated[
        list[Path],
        typer.Argument(metavar="RUN", help="Two or more runs: analyze --json reports or run dirs."),
    ],
    json_out: Annotated[
        str | None, Opt("--json", help="Write the comparison as JSON (- = stdout).")
    ] = None,
    markdown: Annotated[str | None, Opt(help="Write a Markdown table (- = stdout).")] = None,
    plot: Annotated[str | None, Opt(help="Write the figure: .png, .svg or .pdf.")] = None,
    panels: Annotated[
        str | None,
        Opt(
            help="Panels, e.g. accuracy,centroid_alignment (default: accuracy, centroid "
            "alignment, Jacobian norm, effective rank)."
        ),
    ] = None,  # fmt: skip
    dist: Annotated[str | None, Opt(help="With --plot: per-sample distribution of METRIC.")] = None,
    at: Annotated[
        str | None, Opt(help="Steps for --dist, e.g. 0,400 (default first,last).")
    ] = None,
    title: Annotated[str | None, Opt(help="Figure title.")] = None,
    metrics: Annotated[
        str, Opt(help="Run directories: metrics to measure (fast | standard | name,...).")
    ] = "standard",
    samples: Annotated[
        int | None, Opt(help="Run directories: deterministic subset of N samples.", min=1)
    ] = None,
    device: Annotated[str, Opt(help="Run directories: auto | cpu | cuda | mps")] = "auto",
    quiet: Annotated[bool, Opt("--quiet", "-q", help="No table; only outputs and errors.")] = False,
) -> None:
    """Compare runs: trajectories overlaid (mean +- 1 std), differences at matched steps."""
    from alignctl.report import compare as cmp
    from alignctl.report.analysis import resolve_metrics

    if len(runs) < 2:
        raise InputError("compare needs at least two runs")
    resolve_metrics(metrics)
    at_steps = parse_ints(at, "--at")
    panel_keys = _panels(panels)
    if plot is not None:
        from alignctl.report.figures import check_format

        check_format(plot)
    if dist is not None and plot is None:
        raise InputError("--dist needs --plot")
    outputs = check_outputs({"--json": json_out, "--markdown": markdown, "--plot": plot},
                            files_only=("--plot",))  # fmt: skip
    outputs.refuse_inputs(_input_files(runs))
    kwargs = {"metrics": metrics, "samples": samples, "device": device,
              "keep_samples": dist is not None}  # fmt: skip
    reports, console = [], err_console()
    for path in runs:
        if not quiet and console.is_terminal:
            console.print(f"reading {printable(path)}", highlight=False)
        reports.append(cmp.load_report(path, **kwargs))
    series = cmp.series(reports)
    result = cmp.comparison(series)
    if plot is not None:
        from alignctl.report.figures.pages import plot_runs

        text = title if title is not None else " vs ".join(s.label for s in series)

        def draw(path):
            plot_runs(series, path, panels=panel_keys, title=text, dist=dist, at=at_steps)

        outputs.call("--plot", draw)
    if not (quiet or "-" in (json_out, markdown)):
        _print_table(result)
    link = figure_link(plot, markdown) if plot is not None and markdown else None
    outputs.write("--json", lambda: cmp.to_json(result))
    outputs.write("--markdown", lambda: cmp.to_markdown(result, link))
    outputs.finish()


def _input_files(runs) -> list[Path]:
    """The reports given and every file of the run folders given (what compare reads)."""
    files: list[Path] = []
    for spec in runs:
        p = Path(spec)
        files += [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
    return files


def _panels(text: str | None) -> list[str] | None:
    if text is None:
        return None
    from alignctl.report.figures.trajectories import PANELS

    keys = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in keys if k not in PANELS]
    if bad or not keys:
        raise InputError(f"unknown panel {bad[0] if bad else text!r}; valid: {', '.join(PANELS)}")
    return keys


def _print_table(result: dict) -> None:
    """The table fitted to the terminal (``COLUMNS`` when piped, else 80), as analyze's: no
    number cut, columns that do not fit named below it; --json has everything."""
    from alignctl.report.compare import table_rows
    from alignctl.report.fit_table import fit_table

    header, rows = table_rows(result)
    out = out_console()
    table, need, _ = fit_table(
        header, rows, out.width, keep=("step", "run", "verdict"), wraps=("run", "verdict"),
        title="alignctl compare (differences from the first run in parentheses)",
        hint="--json has all",
    )  # fmt: skip
    out.width = max(out.width, need)  # step, run and verdict alone may need more: cut nothing
    out.print(table)
