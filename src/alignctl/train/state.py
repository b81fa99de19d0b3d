"""What a training run saves besides its weights, so that a resumed run continues bit for
bit: optimiser, regularisers, the data-order generator, the global RNG, and where in the
epoch it stopped. Saved as ``checkpoints/state/step_XXXXXXXX.pt`` (plain tensors and numbers,
loaded with ``weights_only=True`` by :mod:`alignctl.train.resume`), always written before its
weights file, so a weights file on disk always has its state beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from alignctl.runs.atomic import atomic_torch_save, atomic_write_text

STATE_DIR = "state"


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def capture_rng(generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(ckpt_dir: Path, step: int, state: dict) -> None:
    atomic_torch_save(state, ckpt_dir / STATE_DIR / f"{step_name(step)}.pt")


def truncate_log(path: Path, last_step: int) -> dict:
    """Drop log lines written after ``last_step`` (by a run that was killed and resumed).
    Returns the last evaluation kept ({} if none): what the run knew at ``last_step``, for
    run.json's accuracies when a resumed run evaluates nothing more (a kill between its last
    checkpoint and run.json)."""
    if not path.exists():
        return {}
    keep, last = [], {}
    for ln in path.read_text().splitlines():
        try:
            ev = json.loads(ln)
            if ev["step"] <= last_step:
                keep.append(ln)
                last = ev
        except (ValueError, KeyError, TypeError):
            pass  # a line cut short by kill -9
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))
    return last if isinstance(last, dict) else {}


def tensors_to(obj, device):
    """Every tensor in nested dicts, lists and tuples moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: tensors_to(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(tensors_to(v, device) for v in obj)
    return obj
