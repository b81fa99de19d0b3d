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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"alignctl {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    pass


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


def _assemble() -> None:
    """Each command module defines plain functions; the app is assembled only here."""
    from alignctl.cli import analyze, compare, geometry, metrics, race, train

    app.command("metrics")(metrics.metrics_cmd)
    app.command()(analyze.analyze)
    app.command()(compare.compare)
    app.command("geometry")(geometry.geometry_cmd)
    app.command()(race.race)
    app.command()(train.train)


_assemble()
