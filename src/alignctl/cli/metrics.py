"""``alignctl metrics``: the metrics analyze can compute, with their definitions."""

from __future__ import annotations

import typer

from alignctl.cli.common import cli_errors


@cli_errors
def metrics_cmd() -> None:
    """List the metrics that analyze can compute, with their definitions."""
    from alignctl.geometry.metrics import METRICS

    for name in METRICS.names():
        m = METRICS.get(name)
        typer.echo(f"{name:<26} [{m.needs}] {m.doc}")
