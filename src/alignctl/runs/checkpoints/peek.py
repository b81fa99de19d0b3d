"""What a checkpoint says about itself, read cheaply (a safetensors header, a memory-mapped
torch file, ``trainer_state.json``): its step and whether it holds model weights at all.

The step is read where training code puts it: ``step``, ``global_step`` (Lightning, Hugging
Face), ``global_steps`` (DeepSpeed), ``iter_num`` (nanoGPT), ``iteration``, ``iter``, fairseq's
``optimizer_history[-1]["num_updates"]``; for a
Hugging Face ``checkpoint-N`` folder, ``global_step`` of its ``trainer_state.json``; else the
name's step (:func:`number_in_name`: never a metric's digits); else ``epoch``, labelled as
such (an epoch is not a step: :mod:`.order` never mixes the two). A stored ``epoch`` is kept
beside a step read from the name, so :mod:`.order` can tell a name whose number is not the
training order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignctl.errors import InputError
from alignctl.runs.checkpoints.dcp import dcp_peek
from alignctl.runs.checkpoints.engines import FSDP_MODEL, engine_folder
from alignctl.runs.checkpoints.formats import (
    HF_FILES,
    hf_main_file,
    parse_metadata,
    safetensors_header,
)
from alignctl.runs.checkpoints.names import number_in_name
from alignctl.runs.checkpoints.safe_unpickle import torch_load
from alignctl.runs.checkpoints.select import (
    candidates,
    not_weights,
    refuse_pickled_module,
    scalar_value,
)
from alignctl.runs.limits import UnreadableZip, check_zip, loads_json, read_text_capped

# timm's CheckpointSaver and PyTorch's ImageNet example write torch.save files as .pth.tar
LONG_SUFFIXES = (".pth.tar",)
STEP_KEYS = ("step", "global_step", "global_steps", "iter_num", "iteration", "iter", "num_updates")
EPOCH_KEY = "epoch"
TRAINER_STATE = "trainer_state.json"


@dataclass(frozen=True)
class Peek:
    step: int | None
    step_from: str | None  # "global_step", "trainer_state.json", "name", "epoch", ...
    not_weights: str | None = None  # why this is not a model checkpoint (optimizer state...)
    epoch: int | None = None  # the stored ``epoch``, when the step came from the name


def as_step(value: Any) -> int | None:
    """A non-negative whole number (int, integral float, digit string), else None."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if float(value).is_integer() and value >= 0:
            return int(value)
    return None


def step_from_metadata(metadata: dict) -> int | None:
    """The first of :data:`STEP_KEYS` holding a whole number (never ``epoch``); None if absent."""
    return _stored_step(metadata)[0]


def _stored_step(meta: dict) -> tuple[int | None, str | None]:
    for key in STEP_KEYS:
        step = as_step(meta.get(key))
        if step is not None:
            return step, key
    return None, None


def _trainer_state_step(folder: Path) -> int | None:
    file = folder / TRAINER_STATE
    if not file.is_file():
        return None
    try:
        state = loads_json(read_text_capped(file, "trainer state"))
    except (InputError, json.JSONDecodeError):
        return None
    return as_step(state.get("global_step")) if isinstance(state, dict) else None


def _file_meta(path: Path) -> tuple[dict, str | None]:
    """(metadata, reason it is not weights) of one file; InputError for hostile files."""
    if path.suffix == ".safetensors":
        return parse_metadata(safetensors_header(path).get("__metadata__")), None
    try:
        check_zip(path, "checkpoint")
    except UnreadableZip:  # broken, or still being written: reported in full when read
        return {}, None
    try:
        obj, _ = torch_load(path, mmap=True)
    except InputError:
        raise
    except Exception as e:  # broken: reported in full when the checkpoint is read
        if "weights only" in str(e).lower():  # a pickle of objects, not tensors (legacy format)
            return {}, "a pickle of objects that torch's weights-only loader refuses"
        return {}, None
    refuse_pickled_module(obj, path)
    if not isinstance(obj, dict):
        return {}, not_weights(obj)
    nested = any(candidates(obj))  # a flat state dict's "step" would be a buffer, not a step
    meta = {
        k: s
        for k, v in obj.items()
        if isinstance(k, str) and (s := scalar_value(v) if nested else _plain(v)) is not None
    }
    updates = _fairseq_updates(obj)
    if updates is not None:
        meta.setdefault("num_updates", updates)
    return meta, not_weights(obj)


def _fairseq_updates(obj: dict) -> Any:
    """fairseq's step: ``optimizer_history[-1]["num_updates"]`` (its names mix epochs,
    ``checkpoint2.pt``, with updates, ``checkpoint_2_1500.pt``); None if absent."""
    history = obj.get("optimizer_history")
    if isinstance(history, list) and history and isinstance(history[-1], dict):
        return scalar_value(history[-1].get("num_updates"))
    return None


def _plain(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool)) else None


def peek(path: Path) -> Peek:
    """The step of one checkpoint file or Hugging Face folder, and whether it is weights."""
    meta, reason, folder = {}, None, None
    engine = _engine(path)
    if engine is not None:  # DeepSpeed or DCP (its trainer_state.json: HF FSDP's checkpoint-N/)
        kind, where = engine
        folder = path.parent if FSDP_MODEL.fullmatch(path.name) else path
        meta, reason = dcp_peek(where) if kind == "dcp" else _file_meta(where)
    elif path.is_dir():
        folder, main = path, hf_main_file(path)
        if main.suffix == ".safetensors":
            meta, _ = _file_meta(main)
    else:
        meta, reason = _file_meta(path)
        if path.name in HF_FILES:
            folder = path.parent
    step, key = _stored_step(meta)
    if step is None and folder is not None:
        step, key = _trainer_state_step(folder), TRAINER_STATE
    name = path.name if path.is_dir() else checkpoint_stem(path)
    epoch = as_step(meta.get(EPOCH_KEY))
    if step is None:
        step, key = number_in_name(name), "name"
    if step is None:
        step, key = epoch, EPOCH_KEY
    return Peek(step, key if step is not None else None, reason, epoch if key == "name" else None)


def _engine(path: Path):
    """:func:`.engines.engine_folder` of a folder that is not a Hugging Face style one."""
    if not path.is_dir() or any((path / f).is_file() for f in HF_FILES):
        return None
    return engine_folder(path)


def checkpoint_stem(path: Path) -> str:
    """The name without its checkpoint suffix (``checkpoint-9`` of ``checkpoint-9.pth.tar``)."""
    for long in LONG_SUFFIXES:
        if path.name.endswith(long) and len(path.name) > len(long):
            return path.name[: -len(long)]
    return path.stem
