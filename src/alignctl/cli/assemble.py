"""The ``alignctl`` application: the Typer app, ``--version`` and the commands assembled.

Data goes to stdout, progress and logs to stderr (shown only on a terminal); exit codes:
0 success, 1 a gate or check failed, 2 usage or input error (one line, no traceback).
Heavy modules (torch) are imported inside the commands so ``--help`` starts fast.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from alignctl._version import __version__

app = typer.Typer(
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

    app.command("metrics")(metrics.metrics_cmd)
    app.command()(analyze.analyze)
    app.command()(race.race)
    app.command()(train.train)


_assemble()
