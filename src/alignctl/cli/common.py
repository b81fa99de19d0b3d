"""Helpers every command shares: one-line errors and exit codes, stderr console, outputs.

Not a command: command modules import this, never each other.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import typer

from alignctl.errors import GateFailed, InputError


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
    from alignctl.runs.atomic import atomic_write_text

    try:
        atomic_write_text(Path(dest), text)
    except OSError as e:
        raise InputError(f"cannot write {dest}: {e.strerror or e}") from None
