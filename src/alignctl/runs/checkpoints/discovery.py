"""Checkpoint discovery: which files and folders of a path are model checkpoints.

A folder is taken as training code leaves it: files that are not model weights
(``optimizer.pt``, ``scheduler.pt``, ``scaler.pt``, ``rng_state.pth``, ``training_args.bin``:
recognised by what they hold, not by name) and entries that are not regular files (a FIFO, a
device) are skipped with a note; hidden entries (our atomic temporaries) and the trainer's
``state/`` folder are ignored. Steps and order: :mod:`.peek` and :mod:`.order`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from alignctl.errors import InputError
from alignctl.runs.checkpoints.engines import engine_folder, weights_subfolder
from alignctl.runs.checkpoints.formats import HF_FILES, hf_main_file, shard_names
from alignctl.runs.checkpoints.order import CheckpointRef, order_checkpoints, sort_checkpoints
from alignctl.runs.checkpoints.peek import (
    LONG_SUFFIXES,
    STEP_KEYS,
    checkpoint_stem,
    peek,
    step_from_metadata,
)
from alignctl.runs.checkpoints.safe_unpickle import EXPORTED
from alignctl.runs.limits import kind_of

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
ACCEPTED = (
    f"accepted: {', '.join(CHECKPOINT_SUFFIXES + LONG_SUFFIXES)} files, Hugging Face "
    "style folders holding model.safetensors or pytorch_model.bin, torch.distributed.checkpoint "
    "folders (.metadata + .distcp) or DeepSpeed folders (mp_rank_00_model_states.pt)"
)
# Sub-folders of one engine checkpoint that are not checkpoints of their own: HF FSDP's
# optimizer_0/ beside pytorch_model_fsdp_0/.
_PART = re.compile(r"optimizer_\d+")
# The trainer's resume state (optimizer etc.) lives in checkpoints/state/: not weights to analyse.
STATE_FOLDER = "state"
_SHOW = 8

__all__ = [
    "ACCEPTED", "CHECKPOINT_SUFFIXES", "EXPORTED", "STATE_FOLDER", "STEP_KEYS", "CheckpointRef",
    "checkpoint_stem", "discover_checkpoints", "is_checkpoint_name", "sort_checkpoints",
    "step_from_metadata",
]  # fmt: skip


def is_checkpoint_name(path: Path) -> bool:
    """Whether a file name is one of a checkpoint file (:data:`CHECKPOINT_SUFFIXES`, .pth.tar)."""
    return path.suffix in CHECKPOINT_SUFFIXES or path.name.endswith(LONG_SUFFIXES)


# PEFT's save_pretrained of a LoRA (or other adapter) model: the adapter's weights only.
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
ADAPTER = "a PEFT adapter ({}: the adapter's weights only, not the model's)"
MERGE = (
    "merge an adapter into its base model (peft: model.merge_and_unload()"
    ".save_pretrained(folder)) and analyse that"
)


def _adapter(path: Path) -> str | None:
    """The adapter file of a PEFT adapter folder, or the file itself; None for anything else."""
    if path.name in ADAPTER_FILES and not path.is_dir():
        return path.name
    if path.is_dir() and not _is_hf_folder(path):
        return next((f for f in ADAPTER_FILES if (path / f).is_file()), None)
    return None


def _is_hf_folder(folder: Path) -> bool:
    return any((folder / f).is_file() for f in HF_FILES)


def _is_one_checkpoint(folder: Path) -> bool:
    """A Hugging Face style folder, or a training engine's checkpoint (:mod:`.engines`)."""
    return _is_hf_folder(folder) or engine_folder(folder) is not None


def _is_hf_subfolder(p: Path) -> bool:
    """A sub-folder that is one checkpoint (``checkpoint-N/``, ``global_step100/``, a DCP
    ``step-100/``); OSError when it cannot be entered."""
    return p.is_dir() and p.name != STATE_FOLDER and _is_one_checkpoint(p)


def _has_hf_subfolder(entries: list[Path], own: Path | None = None) -> bool:
    """Whether a sub-folder other than ``own`` (where the folder's own weights are) and its
    parts (``optimizer_0/``) is a checkpoint: then the folder is a folder of checkpoints."""
    for p in entries:
        if p == own or own is not None and _PART.fullmatch(p.name):
            continue
        try:
            if _is_hf_subfolder(p):
                return True
        except OSError:  # unreadable: named when the folder is listed
            continue
    return False


def _own_model(folder: Path, refs: list, notes: list[str]) -> set[Path]:
    """A Hugging Face output folder holds ``checkpoint-N/`` folders and, after
    ``trainer.save_model()``, its final model beside them: that model joins ``refs`` as one
    more checkpoint (its step from ``trainer_state.json``; else an alias, placed or left out
    by :mod:`.order`). Returns its files, which are not checkpoints of their own."""
    if not _is_hf_folder(folder):
        return set()
    main = hf_main_file(folder)
    if main.name.endswith(".index.json"):  # sharded: a ref is one file or a whole folder
        notes.append(
            f"left out the sharded model {main.name} beside the checkpoint folders of {folder}; "
            "analyse it alone from a folder holding only its files"
        )
        return {folder / n for n in shard_names(main)} | {main}
    ref, why = _ref(main)
    if why is None:
        refs.append(ref)
    return {main}


def _ref(path: Path) -> tuple[CheckpointRef, str | None]:
    info = peek(path)
    name = path.name if path.is_dir() else checkpoint_stem(path)
    return CheckpointRef(path, name, info.step, info.step_from, info.epoch), info.not_weights


def _kind(path: Path) -> str | None:
    """What ``path`` is when it is not a regular file or folder; None when it is one."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken link" if os.path.islink(path) else "missing"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    kind = kind_of(mode)
    return None if kind in (None, "a directory") else kind


def _entries(path: Path) -> list[Path]:
    try:
        # Hidden entries include our own atomic temp files (.name.tmp-XXXX).
        return sorted(p for p in path.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise InputError(f"cannot read checkpoint folder {path}: {e.strerror or e}") from None


def discover_checkpoints(path: Path, notes: list[str] | None = None) -> list[CheckpointRef]:
    """The model checkpoints at ``path`` (a folder or a single file), in training order.
    What was skipped or left out is appended to ``notes`` (one line each)."""
    path, notes = Path(path), notes if notes is not None else []
    try:
        return _discover(path, notes)
    except OSError as e:  # a folder we may not enter (mode 000), a file we may not read
        where = e.filename or path
        raise InputError(f"cannot read {where}: {e.strerror or e}") from None


def _discover(path: Path, notes: list[str]) -> list[CheckpointRef]:
    kind = _kind(path)
    if kind == "missing" or not os.path.lexists(path):
        raise InputError(f"checkpoint path {path} does not exist")
    if kind is not None:
        raise InputError(f"checkpoint path {path} is {kind}, not a checkpoint file or folder")
    if path.is_file() and path.suffix == ".pt2":
        raise InputError(f"{path} {EXPORTED}")
    if path.is_file() and not is_checkpoint_name(path):
        raise InputError(f"{path} is not a checkpoint file ({ACCEPTED})")
    if adapter := _adapter(path):
        raise InputError(f"{path} holds {ADAPTER.format(adapter)}: {MERGE}")
    entries = [] if path.is_file() else _entries(path)
    own = None if path.is_file() else weights_subfolder(path)
    if path.is_file() or _is_one_checkpoint(path) and not _has_hf_subfolder(entries, own):
        ref, why = _ref(path)
        if why is not None:
            raise InputError(f"{path} is not a model checkpoint: it holds {why}")
        return [ref]
    if not entries:
        raise InputError(f"checkpoint folder {path} is empty")
    refs, skipped = [], []
    own = _own_model(path, refs, notes)
    for p in entries:
        if p in own:
            continue
        if p.is_dir():
            try:
                hf = _is_hf_subfolder(p)
            except OSError as e:  # a sub-folder we may not enter: not ours to judge
                skipped.append(f"{p.name}/ (unreadable: {e.strerror or e})")
                continue
            ref, why = _ref(p) if hf else (None, None)
            if ref is not None and why is None:
                refs.append(ref)
            elif ref is not None:
                skipped.append(f"{p.name}/ ({why})")
            elif adapter := _adapter(p):
                skipped.append(f"{p.name}/ ({ADAPTER.format(adapter)})")
            elif is_checkpoint_name(p):  # named like a checkpoint file: say why not
                skipped.append(f"{p.name}/ (a folder, not a checkpoint file)")
            continue
        if not is_checkpoint_name(p):
            continue
        if adapter := _adapter(p):
            skipped.append(f"{p.name} ({ADAPTER.format(adapter)})")
            continue
        kind = _kind(p)
        if kind is not None:
            skipped.append(f"{p.name} ({kind})")
            continue
        ref, why = _ref(p)
        if why is None:
            refs.append(ref)
        else:
            skipped.append(f"{p.name} ({why})")
    if skipped:
        more = f" and {len(skipped) - _SHOW} more" if len(skipped) > _SHOW else ""
        what = f"{', '.join(skipped[:_SHOW])}{more}"
        what += f"; {MERGE}" if any("PEFT adapter" in e for e in skipped) else ""
        if not refs:
            raise InputError(f"no model checkpoints in {path}: skipped {what}")
        notes.append(f"skipped entries that are not model checkpoints: {what}")
    if not refs:
        raise InputError(f"no checkpoint files in {path} ({ACCEPTED}){_hint(entries)}")
    return order_checkpoints(refs, notes)


def _hint(entries: list[Path]) -> str:
    pt2 = next((p for p in entries if p.suffix == ".pt2"), None)
    return f"; {pt2.name} {EXPORTED}" if pt2 else _in_subfolder(entries)


def _in_subfolder(entries: list[Path]) -> str:
    """A hint when a sub-folder other than ``checkpoints/`` (found on its own) holds checkpoint
    files by name, as a loop's ``ckpts/`` beside its config does: names only, nothing read."""
    for p in entries:
        try:
            if p.is_dir() and any(is_checkpoint_name(q) and q.is_file() for q in p.iterdir()):
                return f"; the sub-folder {p.name}/ holds some: pass {p} as the path"
        except OSError:  # a sub-folder we may not enter gives no hint
            continue
    return ""
