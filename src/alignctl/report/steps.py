"""What a checkpoint's step counts, for the report's ``step_unit`` (table, JSON, CSV).

alignctl's trainer writes ``step`` (optimiser steps) with ``alignctl_version`` in each
checkpoint's metadata; Lightning and Hugging Face write ``global_step`` (optimiser steps); any
other ``step`` in the metadata is whatever its writer counted; otherwise the step is the last
number in the checkpoint's name, or, without one, the checkpoint's position.
"""

from __future__ import annotations

OPTIMISER = "optimiser steps"
METADATA = "step from checkpoint metadata"
NAME = "number in checkpoint name"
INDEX = "checkpoint index"


def step_unit(meta, step: int | None) -> str:
    """The unit of ``step`` (a :class:`CheckpointRef`'s) given the checkpoint's metadata."""
    from alignctl.runs.checkpoints.discovery import step_from_metadata

    if step is None:
        return INDEX
    meta = meta if isinstance(meta, dict) else {}
    if step_from_metadata(meta) != step:
        return NAME
    if "step" in meta:
        return OPTIMISER if "alignctl_version" in meta else METADATA
    return OPTIMISER  # global_step


def run_step_unit(units: list[str]) -> str | None:
    """One unit for the run: the checkpoints' common one, else ``mixed``."""
    distinct = list(dict.fromkeys(units))
    return distinct[0] if len(distinct) == 1 else ("mixed" if distinct else None)
