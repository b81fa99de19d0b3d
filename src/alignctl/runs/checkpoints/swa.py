"""The averaged weights of Lightning's ``StochasticWeightAveraging`` callback in a ``.ckpt``.

The callback keeps its averaged copy of the LightningModule in its own state, saved with each
checkpoint as ``callbacks[KEY] = {"n_averaged": N, "latest_update_epoch": E, "scheduler_state":
..., "average_model_state": STATE_DICT}`` (``KEY`` the callback's ``state_key``, its class name
``StochasticWeightAveraging`` unless subclassed: it is found by that structure, not the name).
``STATE_DICT`` is keyed as the checkpoint's own ``state_dict`` (``model.*``); its parameters
are the mean of the weights at the start of each of the N epochs averaged so far
(``lightning/pytorch/callbacks/stochastic_weight_avg.py``: ``update_parameters``).

``weights="raw"`` (default) keeps the raw ``state_dict`` and notes that averaged weights are
present; ``weights="ema"`` takes the averaged copy. Two cases are not that copy's weights:
N = 0 (SWA has not started; the copy is the model as it was before training: the raw weights
are analysed, with a note) and a model with BatchNorm statistics (the callback averages only
parameters; its copy's running statistics are those of the start, recomputed by Lightning
only after the last SWA epoch, on the raw model: refused, the numbers would be wrong).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from alignctl.errors import InputError

_KEYS = {"n_averaged", "average_model_state"}
WHAT = "Lightning StochasticWeightAveraging"


def swa_state(obj: Any) -> tuple[str, dict] | None:
    """(``callbacks`` key, callback state) of the one SWA callback of a Lightning checkpoint
    ``obj`` whose averaged copy holds tensors, else None."""
    callbacks = obj.get("callbacks") if isinstance(obj, dict) else None
    if not isinstance(callbacks, dict):
        return None
    found = [
        (k, v)
        for k, v in callbacks.items()
        if isinstance(k, str) and isinstance(v, dict) and _KEYS <= set(v)
        and isinstance(v["average_model_state"], dict)
        and any(isinstance(t, torch.Tensor) for t in v["average_model_state"].values())
    ]  # fmt: skip
    return found[0] if len(found) == 1 else None


def _n_averaged(state: dict) -> int:
    n = state.get("n_averaged")
    if isinstance(n, torch.Tensor) and n.numel() == 1:
        n = n.item()
    return n if isinstance(n, int) and not isinstance(n, bool) else 0


def averaged_weights(obj: dict, path: Path) -> tuple[dict | None, list[str]]:
    """(the averaged state dict, notes) for ``weights="ema"``; (None, notes) when the raw
    weights are to be analysed (no epoch averaged yet). InputError for BatchNorm statistics."""
    key, state = swa_state(obj)
    where = f"callbacks[{key!r}]['average_model_state']"
    n = _n_averaged(state)
    if n < 1:
        return None, [
            f"{path.name}: {WHAT} had averaged no weights yet (n_averaged 0): analysed its raw "
            "weights"
        ]
    averaged = state["average_model_state"]
    stats = sorted(k for k in averaged if k.endswith((".running_mean", ".running_var")))
    if stats:
        raise InputError(
            f"{path}: the {WHAT} weights cannot be analysed: the model has BatchNorm statistics "
            f"({stats[0]}, ...), which the callback does not average (its copy keeps those of "
            "the start of training; Lightning recomputes them only after the last SWA epoch, "
            "in the raw weights): analyse the raw weights (drop --weights ema), or the "
            "checkpoint saved after training ends"
        )
    return averaged, [f"analysed the SWA-averaged weights ({WHAT}, the checkpoint's {where})"]


def raw_note(obj: dict) -> list[str]:
    """The note of the default (raw) weights when a checkpoint also holds averaged ones."""
    found = swa_state(obj)
    if found is None or _n_averaged(found[1]) < 1:
        return []
    return [
        f"checkpoints also hold SWA-averaged weights ({WHAT}, in the checkpoint's callbacks) "
        "(not used); analyse them with --weights ema"
    ]
