"""Checkpoints: discovery and ordering (:mod:`.discovery`), format readers and our writer
(:mod:`.formats`), strict loading into a model (:mod:`.loading`)."""

from alignctl.runs.checkpoints.discovery import (
    ACCEPTED,
    CHECKPOINT_SUFFIXES,
    STATE_FOLDER,
    STEP_KEYS,
    CheckpointRef,
    discover_checkpoints,
    sort_checkpoints,
    step_from_metadata,
)
from alignctl.runs.checkpoints.formats import (
    HF_FILES,
    STATE_DICT_KEYS,
    is_finite_state,
    natural_key,
    read_checkpoint,
    write_checkpoint,
)
from alignctl.runs.checkpoints.loading import load_weights

__all__ = [
    "ACCEPTED",
    "CHECKPOINT_SUFFIXES",
    "HF_FILES",
    "STATE_DICT_KEYS",
    "STATE_FOLDER",
    "STEP_KEYS",
    "CheckpointRef",
    "discover_checkpoints",
    "is_finite_state",
    "load_weights",
    "natural_key",
    "read_checkpoint",
    "sort_checkpoints",
    "step_from_metadata",
    "write_checkpoint",
]
