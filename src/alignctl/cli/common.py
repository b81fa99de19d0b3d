"""Helpers every command shares: one-line errors and exit codes, stderr console, outputs.

Not a command: command modules import this, never each other.

Every line alignctl prints about a problem (``error:``, ``note:``, ``warning:``, ``gate
failed:``) goes through :func:`printable`: whitespace runs become one space and control
characters are escaped, so a file name holding ``\\x1b[2J`` cannot clear the terminal and a
message is always one line. Exit codes: 0 ok, 1 a gate failed, 2 usage or input error,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import typer

from alignctl.errors import GateFailed, InputError, short


class Terminated(BaseException):  # noqa: N818  (a signal, like KeyboardInterrupt)
    """SIGTERM, turned into an exception so ``finally`` blocks (temporary files) run."""


def printable(text: object) -> str:
    """``text`` on one line with every non-printable character escaped (``\\x1b``, ``\\u202e``)."""
    s = " ".join(str(text).split())
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)


MAX_LINE = 1000  # characters of one message shown; the rest is cut


def _cut(text: str) -> str:
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


def error_line(message: object) -> None:
    typer.echo(f"error: {_cut(printable(message))}", err=True)


def note_line(message: object, prefix: str = "note") -> None:
    typer.echo(f"{prefix}: {_cut(printable(message))}", err=True)


def err_console():
    from rich.console import Console

    # no markup: what is printed holds paths, and "runs/x[/bold]" was a MarkupError
    return Console(stderr=True, markup=False)


def out_console():
    """The stdout console for tables and panels: as wide as the terminal when stdout is one,
    else ``COLUMNS``, else 80. (rich alone measures whichever of stdin, stdout, stderr is a
    terminal: ``analyze R > report.txt`` typed in a 200-column terminal wrote 200-column
    lines, and a piped table changed with the window it was started from.)"""
    from rich.console import Console

    width = None
    if not (hasattr(sys.stdout, "isatty") and sys.stdout.isatty()):
        columns = os.environ.get("COLUMNS", "").strip()
        width = int(columns) if columns.isdigit() and int(columns) > 0 else 80
    return Console(highlight=False, width=width)


def cli_errors(fn):
    """Input errors -> one line on stderr and exit 2; failed gates -> exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            error_line(e)
            raise typer.Exit(2) from None
        except GateFailed:
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except Terminated:
            typer.echo("terminated", err=True)
            raise typer.Exit(143) from None

    return wrapper


def _reason(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


class Outputs:
    """The files one command writes, by option label (``--json``, ``GITHUB_STEP_SUMMARY``...).

    :meth:`check` runs before the work: a destination that cannot be written is exit 2 before
    any minute is spent. :meth:`write` / :meth:`append` / :meth:`call` then write each one;
    a failure is recorded and the others are still written; :meth:`finish` raises one
    InputError naming every output that failed. ``-`` is stdout."""

    def __init__(self, dests: dict[str, str | os.PathLike[str] | None], append=(),
                 files_only=()) -> None:  # fmt: skip
        self.dests = {k: str(v) for k, v in dests.items() if v not in (None, "")}
        self.appended, self.files_only = set(append), set(files_only)
        self.failed: list[str] = []

    def check(self) -> None:
        from alignctl.runs.atomic import check_writable

        if sum(d == "-" for d in self.dests.values()) > 1:
            taken = [k for k, d in self.dests.items() if d == "-"]
            raise InputError(f"only one of {', '.join(taken)} can write to stdout (-)")
        self._check_distinct()
        problems = []
        for label, dest in self.dests.items():
            if dest == "-" and label in self.files_only:
                problems.append(f"{label} needs a file name (- is stdout, for text outputs)")
                continue
            if dest == "-":
                continue
            try:
                check_writable(dest, append=label in self.appended)
            except OSError as e:
                problems.append(f"cannot write {label} {dest}: {_reason(e)}")
        if problems:
            raise InputError("; ".join(problems))

    def _check_distinct(self) -> None:
        """Two outputs naming one regular file (or a link to it) would overwrite each other;
        devices and pipes (/dev/null twice) may be shared."""
        seen: dict[str, str] = {}
        for label, dest in self.dests.items():
            if dest == "-" or (os.path.exists(dest) and not os.path.isfile(dest)):
                continue
            real = os.path.realpath(dest)
            if real in seen:
                raise InputError(f"{seen[real]} and {label} name the same file {dest}: "
                                 "give each output its own file")  # fmt: skip
            seen[real] = label

    def refuse_inputs(self, files) -> None:
        """InputError (exit 2) if a destination is one of ``files`` (the command's inputs), or
        a link to one: writing it would replace or extend what the command reads."""
        inputs = {}
        for f in files:
            try:
                st = os.stat(f)
            except (OSError, ValueError):  # gone, or a name no file can have
                continue
            if stat.S_ISREG(st.st_mode):  # devices and pipes may be shared (/dev/stdin)
                inputs.setdefault((st.st_dev, st.st_ino), f)
        for label, dest in self.dests.items():
            try:
                st = os.stat(dest) if dest != "-" else None
            except (OSError, ValueError):
                continue
            source = inputs.get((st.st_dev, st.st_ino)) if st is not None else None
            if source is not None:
                also = "" if str(source) == dest else f" ({source})"
                raise InputError(f"cannot write {label} {dest}: it is an input of this command"
                                 f"{also}; give another file")  # fmt: skip

    def _guard(self, label: str, action: Callable[[str], None]) -> None:
        dest = self.dests.get(label)
        if dest is None:
            return
        try:
            action(dest)
        except OSError as e:
            self.failed.append(f"cannot write {label} {dest}: {_reason(e)}")

    def write(self, label: str, text: Callable[[], str]) -> None:
        """Replace (or stream) ``label``'s destination with ``text()``."""
        self._guard(label, lambda dest: _write_text(dest, text()))

    def append(self, label: str, text: Callable[[], str]) -> None:
        from alignctl.runs.atomic import append_bytes

        self._guard(label, lambda dest: append_bytes(dest, text().encode("utf-8")))

    def call(self, label: str, writer: Callable[[Path], None]) -> None:
        """``writer(path)`` writes the file itself (e.g. a plot); its OSErrors are recorded."""
        self._guard(label, lambda dest: writer(Path(dest)))

    def finish(self) -> None:
        if self.failed:
            raise InputError("; ".join(self.failed))


def _write_text(dest: str, text: str) -> None:
    if dest == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from alignctl.runs.atomic import atomic_write_text

    atomic_write_text(Path(dest), text)


def write_output(dest: str, text: str, label: str = "output") -> None:
    """``-`` is stdout; a file is replaced atomically, a device or pipe written in place."""
    out = Outputs({label: dest})
    out.write(label, lambda: text)
    out.finish()


def check_output_folder(path: str | os.PathLike[str] | None, label: str) -> None:
    """InputError (exit 2) unless ``path`` is or can become a writable folder (``--out``)."""
    from alignctl.runs.atomic import check_writable_folder

    if path is None:
        return
    try:
        check_writable_folder(path)
    except OSError as e:
        raise InputError(f"cannot write {label} {path}: {_reason(e)}") from None


def check_outputs(dests: dict[str, str | os.PathLike[str] | None], append=(),
                  files_only=()) -> Outputs:  # fmt: skip
    """An :class:`Outputs` already checked (InputError, exit 2, if one cannot be written)."""
    out = Outputs(dests, append, files_only)
    out.check()
    return out


def parse_ints(text: str | None, option: str) -> list[int] | None:
    """``"0,100,400"`` -> [0, 100, 400]; None stays None; anything else is a usage error."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(
            f"{option} takes whole numbers separated by commas, not {short(text)}"
        ) from None
    if not values:
        raise InputError(f"{option} needs at least one number")
    return values


def figure_link(plot: Path, markdown: str) -> str:
    """The figure's path relative to the Markdown file's folder (or the current directory when
    the Markdown goes to stdout), as a Markdown link target: percent-encoded, since spaces,
    brackets, parentheses or ``<>`` in a file name end the link or make it text."""
    import os
    from urllib.parse import quote

    base = Path.cwd() if markdown == "-" else Path(markdown).resolve().parent
    # percent-encoded: a name holding ") ![x](y.png" or spaces made another (or no) image
    rel = Path(os.path.relpath(Path(plot).resolve(), base)).as_posix()
    return quote(os.fsencode(rel), safe="/")  # bytes: a name that is not UTF-8 stays itself


# set by the console script (assemble.main): the process is alignctl's own, so what the
# imports made may be frozen; commands run in another program's process (tests) never are
FREEZE_IMPORTS = {"on": False}


@contextlib.contextmanager
def heavy_imports():
    """A command's imports of torch and the library, with the garbage collector paused.

    torch's import creates ~200k objects and no garbage, but its allocations trigger the
    collector's full collections, each scanning every object made so far (measured: 3-4 of
    them, 0.2-0.4 s CPU per process, plus as much again at exit). In the console script
    (:data:`FREEZE_IMPORTS`) the imported objects are then frozen (``gc.freeze``): later full
    collections, and the interpreter's at exit, skip them; they live for the whole process
    anyway. The collector's previous state is restored."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if FREEZE_IMPORTS["on"]:
            gc.freeze()
        if enabled:
            gc.enable()
