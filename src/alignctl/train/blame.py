"""Whose code raised an exception in the training loop: the user's model (a factory file, a
module of their own) or alignctl and the libraries it runs on.

A factory model that raises mid-run (``RuntimeError`` from its ``forward`` at step 40) is the
user's to fix, not "a bug in alignctl": :func:`user_frame` names the user's line, and the
loop reports one :class:`alignctl.errors.InputError` with it. An exception raised only in
alignctl, torch or another installed package stays an internal error.
"""

from __future__ import annotations

import sysconfig
import traceback
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # src/alignctl


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return tuple(str(Path(r).resolve()) for r in roots if r)


def user_frame(e: BaseException) -> str | None:
    """``FILE:LINE`` of the innermost traceback frame of ``e`` in neither alignctl nor an
    installed library nor the standard library (the user's model code), else None."""
    libs = _library_roots()
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        name = frame.filename
        if name.startswith("<"):  # <frozen ...>, <string>: not a file of the user's
            continue
        path = Path(name).resolve()
        if path.is_relative_to(_PACKAGE) or str(path).startswith(libs):
            continue
        return f"{path.name}:{frame.lineno}"
    return None
