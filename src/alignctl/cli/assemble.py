"""The ``alignctl`` application: the Typer app, ``--version`` and the commands assembled.

Data goes to stdout, progress and logs to stderr (shown only on a terminal); exit codes:
0 success, 1 a gate or check failed, 2 usage or input error (one line, no traceback).
Heavy modules (torch) are imported inside the commands so ``--help`` starts fast.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from alignctl._version import __version__

# placeholders by parameter name, the same in every command; others get their NAME
METAVARS = {
    "path": "PATH", "out": "DIR", "resume": "DIR", "config": "FILE", "model": "SPEC",
    "data": "SPEC", "split": "train|test", "device": "auto|cpu|cuda|mps",
    "metrics": "fast|standard|full|a,b,...", "samples": "N", "batch_size": "N", "seeds": "N",
    "epochs": "N", "max_epochs": "N", "workers": "N", "pgd_steps": "N", "eps": "E",
    "alpha": "A", "json_out": "FILE|-", "csv_out": "FILE|-", "markdown": "FILE|-",
    "plot": "FILE.png", "fail_under": "METRIC=VALUE", "fail_over": "METRIC=VALUE",
    "max_drop": "METRIC=DELTA", "baseline": "REPORT.json", "require_verdict": "VERDICT",
    "reg": "NAME[:k=v,...]", "save_every": "N", "eval_every": "N", "save_schedule": "log:K",
}  # fmt: skip


def _whole_placeholders(params) -> None:
    """``--samples N`` rather than typer's ``<int range>``/``<list[str]>``/``<bool>`` type
    labels (an explicit ``metavar=`` on an option wins); repeatable options say so."""
    for p in params:
        if p.metavar is None and not getattr(p, "is_flag", False):
            p.metavar = METAVARS.get(p.name, p.name.upper())
        if getattr(p, "multiple", False) and p.help and "repeat" not in p.help.lower():
            p.help = f"{p.help.rstrip()} Repeatable."


class Command(TyperCommand):
    """A command whose help is whole: plain text wrapped to the terminal (rich's help tables
    cut long option texts), NAME placeholders."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _whole_placeholders(self.params)


class Group(TyperGroup):
    """The app: commands listed with their whole first sentence, wrapped (click cuts it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _whole_placeholders(self.params)

    def format_commands(self, ctx, formatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                doc = (cmd.short_help or cmd.help or "").strip()
                rows.append((name, " ".join(doc.split("\n\n")[0].split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    cls=Group,
    rich_markup_mode=None,  # plain help: whole texts, wrapped to the terminal
    name="alignctl",
    help="Is my network memorising, generalising or robust, and should I keep training? "
    "Diagnostics from the geometry of the input-output Jacobian (GrokAlign).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def version_line() -> str:
    """``alignctl X (torch Y, python Z, device auto: D)``: what ran, for CI logs. Imports torch
    (about a second) but starts no CUDA context beyond asking for the device's name."""
    import platform

    try:
        import torch

        from alignctl.geometry.devices import resolve_device

        dev = resolve_device("auto")
        name = f"cuda ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else dev.type
        ran = f"torch {torch.__version__}"
    except ImportError:
        ran, name = "torch not installed", "-"
    return (
        f"alignctl {__version__} ({ran}, python {platform.python_version()}, device auto: {name})"
    )


def _version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Show the versions of alignctl, torch and python, and the device "
            "that --device auto picks.",
        ),
    ] = False,
) -> None:
    pass


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


def _assemble() -> None:
    """Each command module defines plain functions; the app is assembled only here."""
    from alignctl.cli import analyze, metrics, race, train

    app.command("metrics", cls=Command)(metrics.metrics_cmd)
    app.command(cls=Command)(analyze.analyze)
    app.command(cls=Command)(race.race)
    app.command(cls=Command)(train.train)


_assemble()
