"""``alignctl analyze --follow``: the live view of a run being written (a rich Live table on a
terminal, one line per new checkpoint when piped) over :func:`alignctl.report.follow.follow_run`."""

from __future__ import annotations

from pathlib import Path

import typer

from alignctl.cli.common import err_console, out_console, printable
from alignctl.errors import InputError


def follow(path, opened, options, cache_at, no_cache, quiet, check_log):
    """``--follow``: a live table on a terminal (rich Live), one line per new checkpoint when
    piped; returns the final report."""
    from rich.live import Live

    from alignctl.report import render
    from alignctl.report.analysis import analyze as run_analysis
    from alignctl.report.cache import Cache
    from alignctl.report.follow import follow_run, plain_line

    out, printed, caches = out_console(), set(), {}
    live = Live(console=out, auto_refresh=False) if out.is_terminal and not quiet else None

    def analyse(run):
        if "c" not in caches:  # in memory at least: each pass measures only new checkpoints
            caches["c"] = None if no_cache else cache_at(run)
            caches["c"] = caches["c"] if isinstance(caches["c"], Cache) else Cache(caches["c"])
        return run_analysis(run, **options, cache=caches["c"])

    def show(report):
        if report.get("device") == "monitor":
            check_log(report)
        if quiet:
            return
        if live is not None:
            # fitted to the terminal like the final table: rich would fold wider numbers
            live.update(render.rich_table(report, width=out.width), refresh=True)
            return
        for ck in report["checkpoints"]:
            if ck["name"] not in printed:
                printed.add(ck["name"])
                typer.echo(plain_line(ck, report["metric_names"]))

    if not quiet and not Path(path).exists():
        from alignctl.report.follow import APPEAR

        err_console().print(f"note: waiting for {printable(path)} to appear (up to {APPEAR:g} s)",
                            highlight=False)  # fmt: skip
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
