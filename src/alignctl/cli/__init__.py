"""The ``alignctl`` command line: Typer commands only, a thin layer over the public API.

:mod:`.assemble` builds the app from the command modules (:mod:`.analyze`, :mod:`.train`,
:mod:`.race`, :mod:`.metrics`); :mod:`.common` holds what they share (one-line errors, exit
codes, outputs). No command module imports another. Heavy modules (torch) are imported inside
the commands so that ``alignctl --help`` starts fast.

May import everything; nothing in the library imports it.
"""

from alignctl.cli.assemble import app, main

__all__ = ["app", "main"]


def __getattr__(name: str):
    # ``alignctl.cli`` was one module before 0.2: its helpers now live in :mod:`.common`.
    from alignctl._compat import forward

    return forward(__name__, "alignctl.cli", "alignctl.cli.common", name)
