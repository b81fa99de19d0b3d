"""Errors that the CLI turns into a one-line message and exit code 2, and :func:`short`, the
form in which their messages show a user's value."""

import math
import re
import reprlib

REPR_CHARS = 80  # the most characters a value shown in a message takes
_LONG_DIGITS = re.compile(r"\d{41,}")


class InputError(Exception):
    """Bad user input: a missing file, a malformed checkpoint, an unknown name...

    The message is shown to the user as is, on one line, without a traceback; a run of more
    than 40 digits in it (a user's huge integer written out) is replaced by its length.
    """

    def __init__(self, *args) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (_LONG_DIGITS.sub(lambda m: f"<an integer of {len(m[0])} digits>", args[0]),)
        super().__init__(*args)


class _Repr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        """Past 4,300 digits ``repr`` raises ValueError (CPython's guard against quadratic
        conversions): the size instead."""
        if x.bit_length() > 10_000:
            return f"<an integer of about {int(x.bit_length() * math.log10(2))} digits>"
        return super().repr_int(x, level)


_repr = _Repr()
_repr.maxstring = _repr.maxother = REPR_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxlevel = 3


def short(value: object) -> str:
    """``repr(value)`` of at most about :data:`REPR_CHARS` characters (nested values cut; an
    integer past 4,300 digits, which ``repr`` refuses, by its size): how a message shows a
    user's value, never ``{value!r}``, which writes out (or fails on) a huge one."""
    text = _repr.repr(value)
    return text if len(text) <= REPR_CHARS else text[: REPR_CHARS - 3] + "..."


class GateFailed(Exception):
    """A CI gate or check failed (exit code 1)."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (what a one-line error quotes of a torch or
    library failure), or its type's name when the message is empty."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def install_command(extra: str, *, module_file=None, dist=None) -> str:
    """The pip command that adds the optional ``extra`` to alignctl the way it is installed.

    Code running from a source checkout (``src/alignctl`` beside a pyproject.toml, installed
    editable or on PYTHONPATH): ``pip install -e '<checkout>[extra]'`` ('.' when it is the
    current directory). Otherwise pip's record of the install (``direct_url.json``, PEP 610):
    a local folder or a VCS/archive URL is named again; a package from an index gets
    ``pip install 'alignctl[extra]'``. ``module_file`` and ``dist`` are for tests.
    """
    import json
    from importlib import metadata
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    def here_or(path: Path) -> str:
        return "." if path.resolve() == Path.cwd().resolve() else str(path)

    root = Path(module_file or __file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "src" / "alignctl").is_dir():
        return f"pip install -e '{here_or(root)}[{extra}]'"
    try:
        raw = (dist or metadata.distribution("alignctl")).read_text("direct_url.json")
        info = json.loads(raw) if raw else {}
    except (metadata.PackageNotFoundError, ValueError):
        info = {}
    url = info.get("url") or ""
    parsed = urlparse(url)
    if parsed.scheme == "file" and "dir_info" in info:
        folder = here_or(Path(unquote(parsed.path)))
        editable = "-e " if info["dir_info"].get("editable") else ""
        return f"pip install {editable}'{folder}[{extra}]'"
    if url:
        vcs = (info.get("vcs_info") or {}).get("vcs")
        return f"pip install 'alignctl[{extra}] @ {vcs + '+' if vcs else ''}{url}'"
    return f"pip install 'alignctl[{extra}]'"


def missing_extra(what: str, module: str, extra: str) -> InputError:
    """The error for an optional dependency that is not installed, with the command that
    installs it the way alignctl was installed."""
    return InputError(f"{what} needs {module}: {install_command(extra)}")
