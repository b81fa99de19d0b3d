"""The names Hugging Face ``save_pretrained`` gives a model's weights in the file.

transformers >= 5 renames modules in code but keeps checkpoints in the legacy layout: on
save, ``revert_weight_conversion`` maps ``vit.layers.0.attention.q_proj.weight`` back to
``vit.encoder.layer.0.attention.attention.query.weight``, and only ``from_pretrained`` maps it
forward again. :func:`legacy_renames` asks transformers itself (for every ``PreTrainedModel``
in the model, only when transformers is already imported) which saved name each of the
model's own tensors gets; a saved tensor that is not one of the model's tensors renamed (a
fused or split weight: a converter) is left alone, so its keys stay missing and the loading
error names them. Nothing is guessed: the map is transformers' own, checked tensor by tensor
(same storage, shape and strides).
"""

from __future__ import annotations

import sys

import torch

from alignctl.errors import InputError

__all__ = ["legacy_renames", "rename_state", "retry_renamed"]


def legacy_renames(model: torch.nn.Module) -> dict[str, str]:
    """Saved name -> model name, both relative to the ``PreTrainedModel`` they belong to
    (a factory may wrap it: :mod:`.loading` finds the prefix), for the names that differ."""
    if "transformers" not in sys.modules:  # a model built without transformers has none
        return {}
    try:
        from transformers import PreTrainedModel
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers < 5 saves the names the model has
        return {}
    out: dict[str, str] = {}
    for _, sub in model.named_modules():
        if not isinstance(sub, PreTrainedModel):
            continue
        own = sub.state_dict()
        where = {_key(t): k for k, t in own.items() if t.numel()}
        try:
            saved = revert_weight_conversion(sub, dict(own))
        except Exception:  # noqa: BLE001 (a model transformers cannot revert: its names stand)
            continue
        for name, t in saved.items():
            mine = where.get(_key(t)) if isinstance(t, torch.Tensor) and t.numel() else None
            if mine is not None and mine != name and name not in own:
                out[name] = mine
    return out


def _key(t: torch.Tensor) -> tuple:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())


def rename_state(state: dict, renames: dict[str, str]) -> dict[str, str]:
    """Renamed key -> original key, for each key of ``state`` that ends (at a dot) with a
    saved name of ``renames``; the saved name is replaced by the model's."""
    back: dict[str, str] = {}
    for key in state:
        parts = key.split(".")
        for i in range(len(parts)):
            tail = ".".join(parts[i:])
            if tail in renames:
                back[".".join([*parts[:i], renames[tail]])] = key
                break
    return back


def retry_renamed(choose, model, state_dict: dict, source: str, **kw):
    """``choose(model, state_dict, source, **kw)``; when it raises InputError (nothing fits)
    and some keys have the saved names of :func:`legacy_renames`, once more under the model's
    names. The fit's sources and ignored keys stay the file's keys; when the renamed keys do
    not fit either, their error is raised, saying the names were translated."""
    try:
        return choose(model, state_dict, source, **kw)
    except InputError:
        back = rename_state(state_dict, legacy_renames(model))
        if not back:
            raise
    forward = {old: new for new, old in back.items()}
    renamed = {forward.get(k, k): v for k, v in state_dict.items()}
    try:
        fit, notes = choose(model, renamed, source, **kw)
    except InputError as e:  # the file is in the saved layout: its problem is named there
        raise InputError(
            f"{e} (keys read under the names transformers gives the file's saved layout, "
            f"{next(iter(back.values()))!r} as {next(iter(back))!r})"
        ) from None
    fit.source = {m: back.get(s, s) for m, s in fit.source.items()}
    fit.ignored = [back.get(k, k) for k in fit.ignored]
    return fit, notes
