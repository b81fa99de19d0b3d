"""Checkpoints: discovery (:mod:`.discovery`), steps (:mod:`.peek`), training order and aliases
(:mod:`.order`), format readers and our writer (:mod:`.formats`), which tensors are the weights
(:mod:`.select`), pickles read without running code (:mod:`.safe_unpickle`), loading into a
model (:mod:`.loading`)."""

from alignctl.runs.checkpoints.discovery import (
    ACCEPTED,
    CHECKPOINT_SUFFIXES,
    EXPORTED,
    STATE_FOLDER,
    STEP_KEYS,
    CheckpointRef,
    discover_checkpoints,
    is_checkpoint_name,
    sort_checkpoints,
    step_from_metadata,
)
from alignctl.runs.checkpoints.formats import (
    HF_FILES,
    STATE_DICT_KEYS,
    Checkpoint,
    is_finite_state,
    natural_key,
    read_checkpoint,
    read_weights,
    write_checkpoint,
)
from alignctl.runs.checkpoints.loading import load_weights
from alignctl.runs.checkpoints.select import WEIGHTS

__all__ = [
    "ACCEPTED",
    "CHECKPOINT_SUFFIXES",
    "EXPORTED",
    "HF_FILES",
    "STATE_DICT_KEYS",
    "STATE_FOLDER",
    "STEP_KEYS",
    "WEIGHTS",
    "Checkpoint",
    "CheckpointRef",
    "discover_checkpoints",
    "is_checkpoint_name",
    "is_finite_state",
    "load_weights",
    "natural_key",
    "read_checkpoint",
    "read_weights",
    "sort_checkpoints",
    "step_from_metadata",
    "write_checkpoint",
]
