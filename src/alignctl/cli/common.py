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


def parse_ints(text: str | None, option: str) -> list[int] | None:
    """``"0,100,400"`` -> [0, 100, 400]; None stays None; anything else is a usage error."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(
            f"{option} takes whole numbers separated by commas, not {text!r}"
        ) from None
    if not values:
        raise InputError(f"{option} needs at least one number")
    return values


def figure_link(plot: Path, markdown: str) -> str:
    """The figure's path relative to the Markdown file's folder (or the current directory when
    the Markdown goes to stdout), as a Markdown link target."""
    import os

    base = Path.cwd() if markdown == "-" else Path(markdown).resolve().parent
    return Path(os.path.relpath(Path(plot).resolve(), base)).as_posix()
