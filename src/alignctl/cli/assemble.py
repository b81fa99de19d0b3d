"""The ``alignctl`` application: the Typer app, ``--version`` and the commands assembled.

Data goes to stdout, progress and logs to stderr (shown only on a terminal); exit codes:
0 success, 1 a gate or check failed, 2 usage or input error (one line, no traceback),
130 interrupted, 143 terminated. Usage errors (a misspelt option, a value out of range, a
missing argument, an unknown command) are one ``error: ...`` line too, not Typer's boxed
panel; ``--help`` is untouched. Warnings (torch, matplotlib) are shown, one line each, only
with ``--verbose`` or ``ALIGNCTL_VERBOSE=1``.
Heavy modules (torch) are imported inside the commands so ``--help`` starts fast.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from alignctl._version import __version__
from alignctl.cli.argv import empty_argument, verbose_first, whole_placeholders
from alignctl.cli.common import FREEZE_IMPORTS, error_line, printable
from alignctl.errors import InputError

VERBOSE_ENV = "ALIGNCTL_VERBOSE"


def _click_modules() -> list:
    """click, and the copy newer Typer versions vendor (``typer._click``): either raises."""
    mods = []
    for name in ("typer._click", "click"):
        try:
            mods.append(__import__(name, fromlist=["exceptions"]))
        except ImportError:
            pass
    return mods


_CLICK = _click_modules()
USAGE_ERRORS = tuple(m.exceptions.ClickException for m in _CLICK)
ABORTS = tuple({typer.Abort, *(getattr(m.exceptions, "Abort", typer.Abort) for m in _CLICK)})


class OneLineErrors(TyperGroup):
    """The app's group: click's usage errors become one escaped ``error:`` line, exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = verbose_first(sys.argv[1:] if args is None else list(args))
        empty = empty_argument(args)
        if empty is not None:
            error_line(empty)
            if standalone_mode:
                sys.exit(2)
            return 2
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        except USAGE_ERRORS as e:
            ctx = getattr(e, "ctx", None)
            if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:  # bare `alignctl`
                typer.echo(ctx.get_help())
                error_line("missing command; see the commands above")
            else:
                hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                error_line(e.format_message() + hint)
            code = 2 if e.exit_code in (0, 1) else e.exit_code  # usage errors are exit 2
        except ABORTS:
            error_line("aborted")
            code = 2
        if standalone_mode:
            sys.exit(code)
        return code


class Command(TyperCommand):
    """A command whose help is whole: plain text wrapped to the terminal (rich's help tables
    cut long option texts), NAME placeholders."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        whole_placeholders(self.params)

    def format_epilog(self, ctx, formatter) -> None:
        from alignctl.cli.examples import write_examples

        super().format_epilog(ctx, formatter)
        write_examples(self.name, formatter)


class Group(OneLineErrors):
    """The app: commands listed with their whole first sentence, wrapped (click cuts it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        whole_placeholders(self.params)

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


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {printable(f'{category.__name__}: {message}')}", file=sys.stderr)


def configure_warnings(verbose: bool) -> None:
    """Silence library warnings, or (verbose) show each as one escaped line on stderr."""
    if verbose:
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
    else:
        warnings.simplefilter("ignore")


_STATE = {"verbose": False}  # set by the callback on every invocation


def verbose_requested() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


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
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", help=f"Show warnings and, on a crash, the traceback (or {VERBOSE_ENV}=1)."
        ),
    ] = False,
) -> None:
    _STATE["verbose"] = verbose or verbose_requested()
    configure_warnings(_STATE["verbose"])


def main() -> None:
    """The console script. Under torchrun (several ranks, :mod:`alignctl.report.distributed`)
    rank 0 runs the command and the other ranks serve it; every rank exits with rank 0's code."""
    from alignctl.report.distributed import StartFailed, join, leave

    FREEZE_IMPORTS["on"] = True  # this process is alignctl's: imported objects stay frozen
    try:
        group = join()
    except InputError as e:  # torchrun's settings are every rank's: rank 0 says what is wrong
        if isinstance(e, StartFailed) or os.environ.get("RANK", "").strip() in ("", "0"):
            error_line(e)
        sys.exit(2)
    if group is not None and group.rank != 0:
        configure_warnings(verbose_requested())  # a serving rank prints nothing
        leave(group.serve())
    code = 2  # unless the app says otherwise
    try:
        _run_app()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 2
        raise
    finally:
        if group is not None:
            group.finish(code)
            leave(code)


def _run_app() -> None:
    """The app under :func:`alignctl.cli.process.run_guarded` (signals, stdout, last resort)."""
    from alignctl.cli.process import run_guarded

    run_guarded(lambda: app(), lambda: _STATE["verbose"] or verbose_requested())


def _assemble() -> None:
    """Each command module defines plain functions; the app is assembled only here."""
    from alignctl.cli import analyze, compare, geometry, metrics, race, train

    app.command("metrics", cls=Command)(metrics.metrics_cmd)
    app.command(cls=Command)(analyze.analyze)
    app.command(cls=Command)(compare.compare)
    app.command("geometry", cls=Command)(geometry.geometry_cmd)
    app.command(cls=Command)(race.race)
    app.command(cls=Command)(train.train)


_assemble()
