"""How an ``alignctl`` process runs a command: SIGTERM turned into an exception (temporary
files are removed on the way out) that is never lost, a stdout that cannot fail on a character
its encoding lacks, and any unexpected error shown as one line. Exit codes: 143 terminated,
130 interrupted, 2 an internal error (a bug: ``--verbose`` shows the traceback)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable

import typer

from alignctl.cli.common import Terminated, error_line

TERMINATED: list[int] = []  # set when SIGTERM arrives, in case its exception is swallowed


def terminate(signum, frame):
    TERMINATED.append(signum)
    raise Terminated()


def quiet_terminated(default):
    """An unraisable-exception hook that drops our own Terminated: raised inside a callback
    (importlib's module-lock weakref) it was printed as "Exception ignored ... Traceback"."""

    def hook(unraisable):
        if not isinstance(unraisable.exc_value, Terminated):
            default(unraisable)

    return hook


def tolerant_stdout() -> None:
    """Under PYTHONIOENCODING=ascii (or latin-1) the table's "≥" or a checkpoint named "é"
    raised UnicodeEncodeError after the whole analysis ("internal error", exit 2, the files
    not written): what stdout's encoding cannot show is written as a backslash escape."""
    enc = (getattr(sys.stdout, "encoding", None) or "utf-8").lower().replace("-", "")
    if enc != "utf8":
        with contextlib.suppress(AttributeError, ValueError):  # replaced or closed: leave it
            sys.stdout.reconfigure(errors="backslashreplace")


def run_guarded(app: Callable[[], None], verbose: Callable[[], bool]) -> None:
    """``app()`` under the guards of the module docstring; ``verbose()``: whether an internal
    error prints its traceback."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    tolerant_stdout()
    try:
        # torch's C initialisation imports numpy and swallows any exception that import
        # raises: a SIGTERM (or Ctrl-C) landing there was lost and the command ran to the end
        # with exit 0. Import it first (SIGTERM's default action covers that time: nothing is
        # written yet).
        import numpy  # noqa: F401

        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, terminate)
            sys.unraisablehook = quiet_terminated(sys.unraisablehook)
        try:
            app()
        except SystemExit as e:  # 143: a command said "terminated" itself (cli_errors)
            if TERMINATED and e.code != 143:  # swallowed somewhere: still terminated
                raise Terminated() from None
            raise
        if TERMINATED:
            raise Terminated()
    except Terminated:
        typer.echo("terminated", err=True)
        sys.exit(143)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except (Exception, RecursionError, MemoryError) as e:  # noqa: BLE001  the last resort
        if verbose():
            import traceback

            traceback.print_exc()
        error_line(
            f"internal error: {type(e).__name__}: {e}; this is a bug in alignctl, please "
            f"report it (--verbose shows the traceback)"
        )
        sys.exit(2)
