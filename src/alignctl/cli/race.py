"""``alignctl race``: the paper's Tables 1 and 4 on any task, in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alignctl.cli.common import (
    check_output_folder,
    check_outputs,
    cli_errors,
    err_console,
    out_console,
)
from alignctl.errors import InputError
from alignctl.report import render_race
from alignctl.train.jsonio import dumps_strict

Opt = typer.Option


markdown_table = render_race.markdown_table  # the Markdown table (files, pipes)


@cli_errors
def race(
    out: Annotated[
        Path | None, Opt(help="Folder for the runs (finished pairs are kept and skipped).")
    ] = None,
    task: Annotated[str | None, Opt(help="A preset, e.g. sparse-parity.")] = None,
    config: Annotated[Path | None, Opt(help="alignctl.yaml of your own task.")] = None,
    regs: Annotated[
        str,
        Opt(
            help="Comma list; the first is the baseline; key=value pieces belong to the "
            "entry before: 'none,grokalign:lambda=0.1,n_proj=2' (';' also separates)."
        ),
    ] = ("none,grokfast,orthograd,grokalign"),
    seeds: Annotated[int, Opt(help="Number of seeds.", min=1)] = 25,
    seed_offset: Annotated[int, Opt(help="First seed.", min=0)] = 0,
    max_epochs: Annotated[int | None, Opt(help="Epoch cap (default: the task's).", min=1)] = None,
    workers: Annotated[int, Opt(help="Parallel worker processes.", min=1)] = 1,
    device: Annotated[str, Opt(help="auto | cpu | cuda | mps")] = "cpu",
    json_out: Annotated[
        str | None, Opt("--json", help="Write the JSON result (- = stdout).")
    ] = None,
    markdown: Annotated[str | None, Opt(help="Write the Markdown table (- = stdout).")] = None,
    quiet: Annotated[
        bool, Opt("--quiet", "-q", help="No progress and no table; only outputs and errors.")
    ] = False,
    threads: Annotated[
        int | None, Opt(help="CPU threads per worker (default: 1 for small models).")
    ] = None,
    render: Annotated[
        Path | None,
        Opt(help="Render a race's saved --json result as the table, training nothing."),
    ] = None,
) -> None:
    """Train every (regulariser, seed) pair to grokking and print the paper's table."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from alignctl.geometry.threads import check_threads
    from alignctl.report.sharded import race_runner
    from alignctl.train.race import load_result, run_race
    from alignctl.train.regularisers import split_reg_list

    if render is not None:
        if out is not None or task is not None or config is not None:
            raise InputError("--render takes a saved result; it trains nothing (no --out, "
                             "--task or --config)")  # fmt: skip
        result = load_result(render)
        outputs = check_outputs({"--json": json_out, "--markdown": markdown})
        outputs.refuse_inputs([render])
        _emit(result, outputs, json_out, markdown, quiet)
        return
    if out is None:
        raise InputError("--out DIR is needed: the folder for the runs")
    check_output_folder(out, "--out")
    outputs = check_outputs({"--json": json_out, "--markdown": markdown})  # before any run
    outputs.refuse_inputs([config] if config else [])
    check_threads(threads)

    reg_list = split_reg_list(regs)
    console = err_console()
    with Progress(TextColumn("pairs"), MofNCompleteColumn(), BarColumn(),
                  TextColumn("{task.description}"), console=console,
                  transient=True, disable=quiet or not console.is_terminal) as bar:  # fmt: skip
        tid = bar.add_task("", total=len(reg_list) * seeds)
        try:
            result = run_race(
                task=task, config=config, regs=reg_list, seeds=seeds, seed_offset=seed_offset,
                max_epochs=max_epochs, workers=workers, out=out, device=device,
                threads=threads, runner=race_runner(),  # the pairs over torchrun's ranks
                on_update=lambda done, total, running: bar.update(
                    tid, completed=done, description=f"{running} running"
                ),
            )  # fmt: skip
        except KeyboardInterrupt:
            typer.echo(f"interrupted: finished pairs are kept in {out}; the same command "
                       "continues the race", err=True)  # fmt: skip
            raise typer.Exit(130) from None
    _emit(result, outputs, json_out, markdown, quiet)


def _emit(result: dict, outputs, json_out, markdown, quiet: bool) -> None:
    outputs.write("--json", lambda: dumps_strict(result, indent=2) + "\n")
    outputs.write("--markdown", lambda: markdown_table(result))
    outputs.finish()
    if not quiet and "-" not in (json_out, markdown):
        out = out_console()
        if out.is_terminal:  # a table for people; Markdown for files and pipes
            table, need = render_race.fitted(result, out.width)
            out.width = max(out.width, need)  # the kept columns alone may need more: cut nothing
            out.print(table)
        else:
            typer.echo(markdown_table(result), nl=False)
