"""The ``alignctl`` command line: a thin layer over the Python API.

Data goes to stdout, progress and logs to stderr (shown only on a terminal); exit codes:
0 success, 1 a gate or check failed, 2 usage or input error (one line, no traceback).
Heavy modules (torch) are imported inside the commands so ``--help`` starts fast.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ._version import __version__
from .errors import GateFailed, InputError

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


def err_console():
    from rich.console import Console

    return Console(stderr=True)


def cli_errors(fn):
    """Input errors -> one line on stderr and exit 2; failed gates -> exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            typer.echo(f"error: {' '.join(str(e).split())}", err=True)
            raise typer.Exit(2) from None
        except GateFailed:
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def write_output(dest: str, text: str) -> None:
    """``-`` is stdout; a path is written atomically."""
    if dest == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from .atomic import atomic_write_text

    try:
        atomic_write_text(Path(dest), text)
    except OSError as e:
        raise InputError(f"cannot write {dest}: {e.strerror or e}") from None


def _register() -> None:
    from . import cli_analyze, cli_race, cli_train  # noqa: F401  (they add their commands)


@app.command("metrics")
@cli_errors
def metrics_cmd() -> None:
    """List the metrics that analyze can compute, with their definitions."""
    from .metrics import METRICS

    for name in METRICS.names():
        m = METRICS.get(name)
        typer.echo(f"{name:<26} [{m.needs}] {m.doc}")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


_register()
