"""Checkpoint discovery and ordering: which files and folders of a path are checkpoints, and
at which step each was written (metadata first, else the last number in the name, naturally
ordered: ``step_9`` before ``step_10``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from alignctl.errors import InputError
from alignctl.runs.checkpoints.formats import (
    HF_FILES,
    _hf_main_file,
    _parse_metadata,
    _torch_load,
    natural_key,
)

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
STEP_KEYS = ("step", "global_step")
ACCEPTED = (
    f"accepted: {', '.join(CHECKPOINT_SUFFIXES)} files, or Hugging Face style folders "
    "holding model.safetensors or pytorch_model.bin"
)
# The trainer's resume state (optimizer etc.) lives in checkpoints/state/: not weights to analyse.
STATE_FOLDER = "state"


@dataclass(frozen=True)
class CheckpointRef:
    path: Path  # the file, or the Hugging Face style folder
    name: str  # file name without suffix, or folder name
    step: int | None  # from metadata if present, else the last number in the name, else None


def _number_in_name(name: str) -> int | None:
    nums = re.findall(r"\d+", name)
    return int(nums[-1]) if nums else None


def step_from_metadata(metadata: dict) -> int | None:
    """``step``, else ``global_step`` (never ``epoch``), as an int; None if absent."""
    for value in (metadata.get(k) for k in STEP_KEYS):
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if float(value).is_integer():
                return int(value)
    return None


def _is_hf_folder(folder: Path) -> bool:
    return any((folder / f).is_file() for f in HF_FILES)


def _ref(path: Path) -> CheckpointRef:
    name = path.name if path.is_dir() else path.stem
    step = _peek_step(path)
    return CheckpointRef(path, name, step if step is not None else _number_in_name(name))


def _peek_step(path: Path) -> int | None:
    """The step stored in the file, read cheaply (header / mmap); None if absent or unreadable:
    a broken file is reported when it is read, with the full reason."""
    try:
        if path.is_dir():
            main = _hf_main_file(path)
            return _peek_step(main) if main.suffix == ".safetensors" else None
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                return step_from_metadata(_parse_metadata(f.metadata()))
        obj = _torch_load(path, mmap=True)
        return step_from_metadata(obj) if isinstance(obj, dict) else None
    except Exception:
        return None


def sort_checkpoints(refs: list[CheckpointRef]) -> list[CheckpointRef]:
    """By step; refs without a step come after, by natural name order."""
    return sorted(refs, key=lambda r: (r.step is None, r.step or 0, natural_key(r.name)))


def discover_checkpoints(path: Path) -> list[CheckpointRef]:
    """The checkpoints at ``path`` (a folder or a single file), ordered by step."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint path {path} does not exist")
    if path.is_file() and path.suffix not in CHECKPOINT_SUFFIXES:
        raise InputError(f"{path} is not a checkpoint file ({ACCEPTED})")
    if path.is_file() or _is_hf_folder(path):
        return [_ref(path)]
    # Hidden entries include our own atomic temp files (.name.tmp-XXXX).
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise InputError(f"checkpoint folder {path} is empty")
    found = [p for p in entries if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES]
    found += [p for p in entries if p.is_dir() and p.name != STATE_FOLDER and _is_hf_folder(p)]
    if not found:
        raise InputError(f"no checkpoint files in {path} ({ACCEPTED})")
    return sort_checkpoints([_ref(p) for p in found])
