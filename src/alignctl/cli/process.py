"""How an ``alignctl`` process runs a command: SIGTERM turned into an exception (temporary
files are removed on the way out) that is never lost, a stdout that cannot fail on a character
its encoding lacks or a reader that goes away (:class:`GuardedStdout`), and any unexpected
error shown as one line. Exit codes: 143 terminated, 130 interrupted, 2 an internal error (a
bug: ``--verbose`` shows the traceback) or a stdout that could not be written."""

from __future__ import annotations

import contextlib
import errno
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


class GuardedStdout:
    """``sys.stdout`` for one command. A write never raises, so the outputs after it (``--json``,
    the step summary) are still written and the gates still decide the exit code:

    - the reader went away (``| head``, ``| grep -q``: EPIPE): it chose to stop reading; the
      rest of the data goes to /dev/null and the exit code stays the gates' (rich's own
      handler exited 1, "a gate failed", before any file was written);
    - stdout cannot take the data (closed with ``>&-``, a full disk, EIO): :attr:`error`
      holds why, and :func:`run_guarded` turns an exit of 0 or 1 into 2 with one ``error:``
      line (it was an AttributeError or OSError reported as a bug, or exit 0 with the data
      lost). A command that writes nothing to stdout is not affected."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.error: OSError | None = None
        self.reader_gone = False

    def _lost(self, e: OSError) -> None:
        if isinstance(e, BrokenPipeError):
            self.reader_gone = True
        elif self.error is None:
            self.error = e
        with contextlib.suppress(AttributeError, OSError, ValueError):
            # what is still buffered, and Python's flush at exit, go nowhere quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())

    def _do(self, action: Callable[[], object], default):
        if self.reader_gone or self.error is not None:
            return default
        if self._stream is None:  # fd 1 was closed when Python started
            self.error = OSError(errno.EBADF, "stdout is closed")
            return default
        try:
            return action()
        except OSError as e:
            self._lost(e)
        except ValueError:  # "I/O operation on closed file"
            self._lost(OSError(errno.EBADF, "stdout is closed"))
        return default

    def write(self, text: str) -> int:
        if self._stream is None and not text:
            return 0  # nothing to lose
        # not short-cut for an open stream: click tells a text stream by write(b"") failing
        return self._do(lambda: self._stream.write(text), len(text))

    def flush(self) -> None:
        if self._stream is not None:
            self._do(self._stream.flush, None)

    def isatty(self) -> bool:
        try:
            return bool(self._stream is not None and self._stream.isatty())
        except (OSError, ValueError):
            return False

    def __getattr__(self, name: str):
        # no ``buffer``: click would write bytes past the guard
        if name == "buffer" or self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)


def run_guarded(app: Callable[[], None], verbose: Callable[[], bool]) -> None:
    """``app()`` under the guards of the module docstring; ``verbose()``: whether an internal
    error prints its traceback."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    tolerant_stdout()
    guard = sys.stdout = GuardedStdout(sys.stdout)
    try:
        _run(app, verbose)
    except SystemExit as e:
        guard.flush()
        if guard.error is not None and e.code in (None, 0, 1):
            error_line(f"cannot write stdout: {guard.error.strerror or guard.error}")
            sys.exit(2)
        raise


def _run(app: Callable[[], None], verbose: Callable[[], bool]) -> None:
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
        sys.exit(0)
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
