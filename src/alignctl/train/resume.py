"""Where ``alignctl train --resume`` continues: the newest checkpoint whose weights *and*
state both read back and fit the model.

Every kill leaves one of these on disk, and each resumes:

- no checkpoint yet (killed between writing ``alignctl.yaml`` and saving step 0, or during the
  step-0 save): the run starts again from step 0, which, the initialisation depending on the
  seed alone, is the same as never having been killed;
- a step whose state was written but not its weights: skipped (weights mark a step complete);
- a newest checkpoint that is truncated or corrupt (weights or state): moved aside as a hidden
  ``.NAME.corrupt`` file, with a note, and the previous good checkpoint is used;
- temporary files of an atomic write cut short: removed by the caller (:meth:`restore`).

Nothing is loaded into the model or optimiser here: the caller applies the result, so a
candidate that fails to read never leaves a half-restored trainer behind.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alignctl.errors import InputError, first_line
from alignctl.runs.pickle_scan import check_allocations
from alignctl.train.state import STATE_DIR

STATE_KEYS = ("optimizer", "regularisers", "rng", "step", "epoch", "batch_index", "perm",
              "train_seconds", "grokked_epoch")  # fmt: skip
_STEP_FILE = re.compile(r"step_\d{8,}\.(safetensors|pt)")  # 8 digits, more past 10**8


class _Unreadable(Exception):
    pass


@dataclass
class ResumePoint:
    """``weights``/``state`` are None when the run restarts from step 0."""

    step: int
    weights: dict | None = None
    state: dict | None = None
    notes: list[str] = field(default_factory=list)


def find_resume_point(ckpt_dir: Path, model: torch.nn.Module) -> ResumePoint:
    """The newest usable checkpoint of ``ckpt_dir`` for ``model`` (see the module docstring).
    Raises :class:`InputError` when nothing is usable and the folder holds files that are not
    alignctl's own (it is not a run that ``alignctl train`` created)."""
    notes = []
    try:
        pairs = _pairs(ckpt_dir)
    except OSError as e:  # a folder we may not list (mode 000): one line, not a crash
        raise InputError(f"cannot read {e.filename or ckpt_dir}: {e.strerror or e}") from None
    for step, weights, state in pairs:
        try:
            sd = _read_weights(weights, model)
            st = _read_state(state, step)
        except _Unreadable as e:
            aside = _move_aside(weights, state)
            notes.append(f"{weights.name} cannot be read ({e}); moved aside as {aside}; "
                         "falling back to the previous checkpoint")  # fmt: skip
            continue
        return ResumePoint(step, sd, st, notes)
    if not _only_alignctl_files(ckpt_dir):
        raise InputError(f"{ckpt_dir} holds no resumable checkpoint")
    notes.append("the run stopped before its first checkpoint was saved; starting it at step 0")
    return ResumePoint(0, None, None, notes)


def _pairs(ckpt_dir: Path) -> list[tuple[int, Path, Path]]:
    """(step, weights, state) of every step that has both files, newest first."""
    out = []
    for st in (ckpt_dir / STATE_DIR).glob("step_*.pt"):
        weights = ckpt_dir / f"{st.stem}.safetensors"
        if _STEP_FILE.fullmatch(st.name) and weights.is_file():
            out.append((int(st.stem.split("_")[1]), weights, st))
    return sorted(out, reverse=True)


def _first_line(e: BaseException) -> str:
    return first_line(e)[:160]


def _read_weights(path: Path, model: torch.nn.Module) -> dict:
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path))  # validates the header against the file's size
    except Exception as e:  # safetensors raises its own error type on a truncated file
        raise _Unreadable(_first_line(e)) from None
    target = model.state_dict()
    if sd.keys() != target.keys():
        raise _Unreadable("its tensors are not the model's")
    for k, v in sd.items():
        if v.shape != target[k].shape or v.dtype != target[k].dtype:
            raise _Unreadable(f"tensor {k} has shape {tuple(v.shape)} {v.dtype}")
    return sd


def _read_state(path: Path, step: int) -> dict:
    try:
        check_allocations(path, f"state {path.name}")  # bytearray(2**34) is on torch's allowlist
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated zip raises RuntimeError, an empty file EOFError
        raise _Unreadable(f"state {path.name}: {_first_line(e)}") from None
    if not isinstance(st, dict) or any(k not in st for k in STATE_KEYS):
        raise _Unreadable(f"state {path.name} is incomplete")
    if int(st["step"]) != step:
        raise _Unreadable(f"state {path.name} is for step {st['step']}")
    return st


def _move_aside(weights: Path, state: Path) -> str:
    """Rename both files to hidden ``.NAME.corrupt`` (ignored by checkpoint discovery, kept
    for inspection); returns the weights' new name."""
    for p in (weights, state):
        try:
            os.replace(p, p.with_name(f".{p.name}.corrupt"))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise InputError(f"cannot move the unreadable {p} aside: {e.strerror or e}") from None
    return f".{weights.name}.corrupt"


def _only_alignctl_files(ckpt_dir: Path) -> bool:
    """True when ``ckpt_dir`` is absent or holds only what ``alignctl train`` writes there
    (step files, the state folder, hidden temporaries): safe to start the run afresh."""
    if not ckpt_dir.exists():
        return True
    for p in ckpt_dir.iterdir():
        if p.name.startswith(".") or (p.is_file() and _STEP_FILE.fullmatch(p.name)):
            continue
        if p.name == STATE_DIR and p.is_dir():
            if all(q.name.startswith(".") or _STEP_FILE.fullmatch(q.name) for q in p.iterdir()):
                continue
        return False
    return True
