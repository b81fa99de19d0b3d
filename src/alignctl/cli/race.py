"""``alignctl race``: the paper's Tables 1 and 4 on any task, in one command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from alignctl.cli.common import cli_errors, err_console, write_output

Opt = typer.Option


# how a speed-up with censored runs reads (race.bound)
_MARK = {"lower": ">=", "upper": "<=", "unknown": "~"}


def markdown_table(result: dict) -> str:
    first = result["seed_offset"]
    lines = [f"Task `{result['task']}`, seeds {first}..{first + result['seeds'] - 1}, "
             f"max {result['max_epochs']} epochs", "",
             "| regulariser | mean epochs | speed-up | p (paired t) | mean seconds | "
             "wall-clock speed-up | grokked |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["rows"]:
        bound = _MARK.get(r.get("bound"), "")
        p = "-" if r["p_value"] is None else f"{r['p_value']:.2g}"
        lines.append(f"| {r['reg']} | {r['mean_epochs']:.1f} ± {r['std_epochs']:.1f} | "
                     f"{bound}{r['speedup']:.2f}x | {p} | {r['mean_seconds']:.2f} | "
                     f"{r['wall_speedup']:.2f}x | {r['grokked']}/{r['runs']} |")  # fmt: skip
    if any(r["censored"] for r in result["rows"]):
        lines += ["", "Runs that did not grok count at max epochs (censored). A speed-up marked "
                  ">= is a lower bound (censored baseline runs), <= an upper bound (censored "
                  "runs of that regulariser), ~ neither (both censored)."]  # fmt: skip
    return "\n".join(lines) + "\n"


@cli_errors
def race(
    out: Annotated[Path, Opt(help="Folder for the runs (finished pairs are kept and skipped).")],
    task: Annotated[str | None, Opt(help="A preset, e.g. sparse-parity.")] = None,
    config: Annotated[Path | None, Opt(help="alignctl.yaml of your own task.")] = None,
    regs: Annotated[
        str,
        Opt(
            help="Comma list; the first is the baseline. ';' separates "
            "entries that carry parameters: 'none;grokalign:lambda=0.1'."
        ),
    ] = ("none,grokfast,orthograd,grokalign"),
    seeds: Annotated[int, Opt(help="Number of seeds.", min=1)] = 25,
    seed_offset: Annotated[int, Opt(help="First seed.", min=0)] = 0,
    max_epochs: Annotated[int | None, Opt(help="Epoch cap (default: the task's).", min=1)] = None,
    workers: Annotated[int, Opt(help="Parallel worker processes.", min=1)] = 1,
    device: Annotated[str, Opt(help="cpu | cuda | auto")] = "cpu",
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
) -> None:
    """Train every (regulariser, seed) pair to grokking and print the paper's table."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from alignctl.geometry.threads import check_threads
    from alignctl.train.race import run_race

    check_threads(threads)

    reg_list = [
        r.strip() for r in (regs.split(";") if ";" in regs else regs.split(",")) if r.strip()
    ]
    console = err_console()
    with Progress(TextColumn("pairs"), MofNCompleteColumn(), BarColumn(),
                  TextColumn("{task.description}"), console=console,
                  transient=True, disable=quiet or not console.is_terminal) as bar:  # fmt: skip
        tid = bar.add_task("", total=len(reg_list) * seeds)
        result = run_race(
            task=task, config=config, regs=reg_list, seeds=seeds, seed_offset=seed_offset,
            max_epochs=max_epochs, workers=workers, out=out, device=device, threads=threads,
            on_update=lambda done, total, running: bar.update(
                tid, completed=done, description=f"{running} running"
            ),
        )  # fmt: skip
    text = markdown_table(result)
    if json_out:
        write_output(json_out, json.dumps(result, indent=2) + "\n")
    if markdown:
        write_output(markdown, text)
    if not quiet and "-" not in (json_out, markdown):
        typer.echo(text, nl=False)
