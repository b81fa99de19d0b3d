"""Strict loading of a state dict into a model: keys, shapes and dtypes must fit."""

from __future__ import annotations

import torch

from alignctl.errors import InputError

_SHOW = 3  # offending keys named in a mismatch message


def load_weights(model: torch.nn.Module, state_dict: dict, source: str) -> None:
    """Strictly load ``state_dict`` into ``model``, casting to the model's dtypes. A shared
    leading component (Lightning's ``model.``/``net.`` attribute) is stripped if that fits."""
    target = model.state_dict()
    candidates = [state_dict]
    if len({k.split(".", 1)[0] for k in state_dict}) == 1 and all("." in k for k in state_dict):
        candidates.append({k.split(".", 1)[1]: v for k, v in state_dict.items()})
    problems = [_mismatch(c, target) for c in candidates]
    for cand, problem in zip(candidates, problems, strict=True):
        if not problem:
            cast = {k: v.to(dtype=target[k].dtype) for k, v in cand.items()}
            model.load_state_dict(cast, strict=True)
            return
    # Report against the closest variant: fewest missing + unexpected keys.
    best = min(problems, key=lambda p: p[1])
    raise InputError(f"checkpoint {source} does not fit the model: {best[0]}")


def _mismatch(state: dict, target: dict) -> tuple[str, int] | None:
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [
        f"shape mismatch for {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in target.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing keys {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {_few(unexpected)}")
    parts += shapes[:_SHOW]
    return ("; ".join(parts), len(missing) + len(unexpected)) if parts else None


def _few(keys: list[str]) -> str:
    more = f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more
