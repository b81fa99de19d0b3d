"""Folders that distributed-training engines write as one checkpoint, and where their weights are.

- **DeepSpeed** (ZeRO stages 0-2): a tag folder (``global_step100/``) holding
  ``mp_rank_00_model_states.pt``, a dict whose ``module`` is the model's state dict (with
  ``global_steps``, the optimizer, the ds_config...), beside ``*_optim_states.pt`` files; its
  parent holds a ``latest`` text file naming the newest tag. A folder holding ``latest`` and
  the tag it names, but no other tag, is that one checkpoint (Lightning's DeepSpeed strategy
  writes ``epoch=0-step=10.ckpt/latest`` + ``checkpoint/``). ZeRO-3 partitions the weights
  over ``zero_pp_rank_*_mp_rank_00_model_states.pt`` files and tensor parallelism over
  ``mp_rank_01_...``: both refused with how to consolidate them (``zero_to_fp32.py``).
- **DCP** (:mod:`.dcp`): a folder holding ``.metadata``; or a folder holding one
  ``pytorch_model_fsdp_0/`` DCP folder (the Hugging Face Trainer and accelerate under FSDP's
  ``SHARDED_STATE_DICT``: ``checkpoint-N/pytorch_model_fsdp_0/`` beside ``optimizer_0/``).
- **accelerate** ``save_state`` folders hold ``model.safetensors`` or ``pytorch_model.bin``
  and are Hugging Face style folders (:mod:`.formats`); ``random_states_0.pkl`` is never read.
"""

from __future__ import annotations

import re
from pathlib import Path

from alignctl.errors import InputError
from alignctl.runs.checkpoints.dcp import is_dcp_folder
from alignctl.runs.limits import read_text_capped

DS_MODEL = "mp_rank_00_model_states.pt"
DS_LATEST = "latest"
FSDP_MODEL = re.compile(r"pytorch_model_fsdp_(\d+)")
_ZERO3 = re.compile(r"zero_pp_rank_\d+_mp_rank_\d+_model_states\.pt")
_MP = re.compile(r"mp_rank_(\d+)_model_states\.pt")

__all__ = ["DS_LATEST", "DS_MODEL", "engine_folder", "weights_subfolder"]


def _deepspeed_file(folder: Path) -> Path | None:
    """The model-states file of a DeepSpeed tag folder; InputError for ZeRO-3 / tensor-parallel
    folders, which alignctl cannot consolidate."""
    model = folder / DS_MODEL
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    ranks = sorted({int(m.group(1)) for n in names if (m := _MP.fullmatch(n))})
    if ranks and ranks != [0]:
        raise InputError(
            f"{folder} is a model-parallel DeepSpeed checkpoint ({len(ranks)} mp_rank_*"
            "_model_states.pt files): alignctl reads one whole model; merge the ranks into one "
            "state dict first"
        )
    if model.is_file():
        return model
    if any(_ZERO3.fullmatch(n) for n in names):
        raise InputError(
            f"{folder} is a DeepSpeed ZeRO-3 checkpoint: its weights are partitioned over the "
            "zero_pp_rank_* files; consolidate them first with the zero_to_fp32.py script "
            "DeepSpeed writes beside them (python zero_to_fp32.py . OUT), then analyse OUT"
        )
    return None


def _latest_tag(folder: Path) -> Path | None:
    """The tag folder a DeepSpeed ``latest`` file names (inside ``folder``), None if none."""
    latest = folder / DS_LATEST
    if not latest.is_file():
        return None
    tag = read_text_capped(latest, "DeepSpeed latest file", 4096).strip()
    if not tag or "/" in tag or "\\" in tag or tag in (".", ".."):
        return None
    return folder / tag if (folder / tag).is_dir() else None


def weights_subfolder(folder: Path) -> Path | None:
    """The sub-folder of ``folder`` holding its weights when ``folder`` is one checkpoint whose
    weights sit a level down (``pytorch_model_fsdp_0/``, DeepSpeed's ``latest`` tag)."""
    fsdp = sorted(p for p in _subdirs(folder) if FSDP_MODEL.fullmatch(p.name) and is_dcp_folder(p))
    if fsdp:
        return fsdp[0]
    tag = _latest_tag(folder)
    if tag is not None and _deepspeed_file(tag) is not None:
        return tag
    return None


def _subdirs(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir()]
    except OSError:
        return []


def engine_folder(folder: Path, *, nested: bool = True) -> tuple[str, Path] | None:
    """("deepspeed", its model-states file) or ("dcp", the DCP folder) when ``folder`` is one
    engine checkpoint; None otherwise. ``nested``: also a folder whose weights sit a level
    down (:func:`weights_subfolder`). InputError for layouts that cannot be read."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    if is_dcp_folder(folder):
        return "dcp", folder
    ds = _deepspeed_file(folder)
    if ds is not None:
        return "deepspeed", ds
    sub = weights_subfolder(folder) if nested else None
    if sub is None:
        return None
    return ("dcp", sub) if is_dcp_folder(sub) else ("deepspeed", sub / DS_MODEL)
