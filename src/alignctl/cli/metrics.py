"""``alignctl metrics``: the metrics analyze can compute, with their definitions."""

from __future__ import annotations

import inspect
import shutil
import textwrap

import typer

from alignctl.cli.common import cli_errors


def describe(width: int) -> str:
    """Every registered metric: its name and what it needs, then its whole docstring wrapped
    to ``width`` columns (the registry keeps only the first line)."""
    from alignctl.geometry.metrics import METRICS

    blocks = []
    for name in METRICS.names():
        m = METRICS.get(name)
        doc = " ".join(inspect.cleandoc(m.fn.__doc__ or m.doc or "").split())
        body = textwrap.fill(doc, width=max(width, 40), initial_indent="    ",
                             subsequent_indent="    ", break_long_words=False,
                             break_on_hyphens=False)  # fmt: skip
        blocks.append(f"{name} [needs {m.needs}]\n{body}")
    return "\n\n".join(blocks) + "\n"


@cli_errors
def metrics_cmd() -> None:
    """List the metrics that analyze can compute, with their definitions."""
    typer.echo(describe(shutil.get_terminal_size((80, 24)).columns), nl=False)
