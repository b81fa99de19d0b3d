"""Which tensors of a loaded torch checkpoint are the model's weights.

A checkpoint is a flat state dict, or a dict holding one: under ``state_dict`` / ``model`` /
``model_state_dict`` (Lightning, nanoGPT, most loops), under any single other key (``net``,
with a note), under ``current_model_state`` (Lightning's ``WeightAveraging`` callbacks, whose
``state_dict`` is the averaged copy), or as an EMA copy under a key such as ``ema``, ``model_ema``,
``state_dict_ema``, ``ema_state_dict``, ``ema_model`` (any key whose ``_``/``.``-separated
words include ``ema``, ``swa``, ``averaged``, ``shadow`` or ``polyak``). ``weights="raw"``
(default) takes the raw weights and notes that an EMA copy exists; ``weights="ema"`` takes
the EMA copy (or, when it lives inside the state dict under a prefix, leaves the choice to
:func:`alignctl.runs.checkpoints.loading.load_weights`). ``state_key`` names any top-level key,
else a prefix inside the state dict. Only tensors are ever taken; everything else (hyper
parameters, optimizer state, inert placeholders of :mod:`.safe_unpickle`) stays behind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignctl.errors import InputError
from alignctl.runs.checkpoints.safe_unpickle import (
    Inert,
    describe,
    numpy_array,
    numpy_scalar,
    pickled_module,
    tensor_kind,
)
from alignctl.runs.checkpoints.swa import averaged_weights, raw_note, swa_state

STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")
EMA_WORDS = ("ema", "swa", "averaged", "shadow", "polyak")
_INNER_KEYS = (*STATE_DICT_KEYS, "module", "shadow", "params", "weights")
WEIGHTS = ("raw", "ema")


def is_ema_name(name: str) -> bool:
    """``model_ema``, ``ema.module``, ``state_dict_ema``, ``swa_model``: an averaged copy."""
    return any(w in EMA_WORDS for w in re.split(r"[._\-]", name.lower()))


def is_tensor_dict(v: Any, strict: bool = True) -> bool:
    """A state dict: string keys, tensor values (``strict=False``: at least one tensor, so that
    a bad entry under a known key is named when read rather than the file being skipped)."""
    if not isinstance(v, dict) or not v or not all(isinstance(k, str) for k in v):
        return False
    test = all if strict else any
    return test(isinstance(x, torch.Tensor) for x in v.values())


def _unwrap(v: Any, strict: bool = True) -> dict | None:
    """A tensor dict, or one a level down (``{"ema": {"module": sd, "decay": 0.999}}``)."""
    if is_tensor_dict(v, strict):
        return v
    if isinstance(v, dict):
        inner = [v[k] for k in _INNER_KEYS if is_tensor_dict(v.get(k), strict)]
        inner = inner or [x for x in v.values() if is_tensor_dict(x, strict)]
        if len(inner) == 1:
            return inner[0]
    return None


@dataclass
class Selection:
    state: dict[str, torch.Tensor]
    meta: dict
    notes: list[str] = field(default_factory=list)
    # How load_weights chooses among prefixes of ``state``: "raw", "ema" or "prefix".
    mode: str = "raw"
    prefix: str | None = None


def scalar_value(v: Any) -> Any:
    if isinstance(v, (int, float, str, bool)):
        return v
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_complex():
        return v.item()  # nanoGPT's best_val_loss, some loops' step counters
    return numpy_scalar(v)  # np.int64(step): read from its bytes, numpy never called


def _meta(obj: dict, state: dict) -> dict:
    if obj is state:
        return {}
    return {
        k: s for k, v in obj.items() if isinstance(k, str) and (s := scalar_value(v)) is not None
    }


def _weight_averaging(obj: dict) -> bool:
    """A checkpoint of Lightning's ``WeightAveraging`` callbacks (``EMAWeightAveraging``): its
    ``state_dict`` holds the *averaged* weights, ``current_model_state`` the raw ones and
    ``averaging_state`` the ``AveragedModel``'s ``n_averaged``."""
    return (
        "averaging_state" in obj
        and _unwrap(obj.get("current_model_state"), strict=False) is not None
        and _unwrap(obj.get("state_dict"), strict=False) is not None
    )


def candidates(obj: dict) -> tuple[list[str], list[str]]:
    """(raw keys, EMA keys) of ``obj`` holding a tensor dict, in order of preference."""
    if _weight_averaging(obj):
        return ["current_model_state"], ["state_dict"]
    raw = [k for k in STATE_DICT_KEYS if _unwrap(obj.get(k), strict=False) is not None]
    others = [k for k in obj if isinstance(k, str) and k not in raw and _unwrap(obj[k]) is not None]
    ema = [k for k in others if is_ema_name(k)]
    raw += [k for k in others if k not in ema and k not in STATE_DICT_KEYS]
    return raw, ema


def not_weights(obj: Any) -> str | None:
    """Why ``obj`` is not a model checkpoint (``"an optimizer state"``), None if it is one.
    A whole pickled module is a model: it is refused when read, not skipped."""
    if pickled_module(obj) or isinstance(obj, dict) and any(map(pickled_module, obj.values())):
        return None
    # an optimizer's own state_dict first: its per-parameter states keyed by parameter name
    # (named optimizers, torch >= 2.5 `named_parameters`) would read as weights
    if isinstance(obj, dict) and {"state", "param_groups"} <= set(obj) and len(obj) == 2:
        return "an optimizer state"
    if isinstance(obj, dict) and (is_tensor_dict(obj) or any(candidates(obj))):
        return None
    if isinstance(obj, dict):
        keys = set(obj)
        if {"state", "param_groups"} <= keys or any("optim" in str(k) for k in keys):
            return "an optimizer state"
        if {"scale", "growth_factor"} <= keys:
            return "a gradient-scaler state"
        if {"last_epoch", "base_lrs"} & keys or "_last_lr" in keys:
            return "a learning-rate scheduler state"
        if {"python", "numpy", "cpu"} & keys:
            return "random-number-generator states"
        arrays = [k for k, v in obj.items() if numpy_array(v)]
        if arrays:
            return (
                f"a dict of numpy arrays ({_few_keys(arrays)}), never rebuilt from a pickle: save "
                "torch tensors (torch.from_numpy) or a .safetensors file"
            )
        other = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
        if len(obj) > 1 and any(isinstance(v, torch.Tensor) for v in obj.values()):
            kind = describe(obj[other]).removeprefix("a ")  # an Inert: the global it stands for
            return f"a dict mixing tensors with other values ({other!r} is a {kind})"
        shown = ", ".join(sorted(map(str, keys))[:5]) or "none"
        return f"a dict without tensors (keys: {shown})"
    return describe(obj)


def _few_keys(keys: list) -> str:
    shown = ", ".join(map(repr, keys[:3]))
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _refuse_module(path: Path, cls: str, where: str = "") -> InputError:
    return InputError(
        f"{path} holds a pickled module of class {cls}{where} (torch.save(model)), not a state "
        "dict; alignctl never imports your class to rebuild it: re-save the weights with "
        "torch.save(model.state_dict(), path)"
    )


def refuse_pickled_module(obj: Any, path: Path) -> None:
    """InputError when ``obj`` is a whole pickled module (or a dict holding only one)."""
    if pickled_module(obj):
        raise _refuse_module(path, pickled_module(obj))
    if isinstance(obj, dict) and not any(candidates(obj)):
        modules = [(k, pickled_module(v)) for k, v in obj.items() if pickled_module(v)]
        if modules:
            raise _refuse_module(path, modules[0][1], f" under {modules[0][0]!r}")


def select_state(obj: Any, path: Path, *, weights: str = "raw", state_key: str | None = None):
    """The :class:`Selection` of ``obj`` (what ``torch.load`` returned); InputError naming what
    the file holds when it holds no usable state dict."""
    refuse_pickled_module(obj, path)
    if not isinstance(obj, dict):
        raise InputError(f"{path} holds no state dict (found {describe(obj)})")
    raw, ema = candidates(obj)
    notes: list[str] = []
    mode, prefix = "raw", None
    # Lightning's SWA keeps its averaged copy in the callback state (.swa)
    swa = weights == "ema" and not ema and state_key is None and swa_state(obj) is not None
    averaged, notes = averaged_weights(obj, path) if swa else (None, notes)
    if averaged is not None:
        chosen, state = None, averaged
    elif state_key is not None and state_key in obj:
        state = _unwrap(obj[state_key], strict=False)
        if state is None:
            raise InputError(f"{path}: key {state_key!r} holds no tensors")
        chosen = state_key
    elif weights == "ema" and ema and state_key is None:
        chosen, state = ema[0], _unwrap(obj[ema[0]], strict=False)
        notes.append(f"analysed the EMA weights stored under {chosen!r}")
    else:
        if raw:
            chosen, state = raw[0], _unwrap(obj[raw[0]], strict=False)
        elif any(isinstance(v, torch.Tensor) for v in obj.values()):
            chosen, state = None, obj
        else:
            raise InputError(
                f"{path} holds no state dict ({not_weights(obj)}; expected a dict of tensors, "
                f"or one under {', '.join(repr(k) for k in STATE_DICT_KEYS)})"
            )
        if state_key is not None:
            mode, prefix = "prefix", state_key.rstrip(".") + "."
        elif weights == "ema" and not swa:
            mode = "ema"  # the EMA copy, if any, lives under a prefix of this state dict
        elif ema:
            notes.append(
                f"checkpoints also hold EMA weights under {ema[0]!r} (not used); analyse them "
                "with --weights ema"
            )
        elif weights == "raw":
            notes += raw_note(obj)
        if state_key is None and len(raw) > 1 and chosen not in STATE_DICT_KEYS:
            raise InputError(
                f"{path} holds several state dicts ({', '.join(map(repr, raw))}); choose one "
                "with --state-key KEY"
            )
        if chosen is not None and chosen not in STATE_DICT_KEYS and state_key is None:
            notes.append(f"weights read from the checkpoint key {chosen!r}")
        elif state_key is None and len(raw) > 1:
            notes.append(
                f"weights read from {chosen!r}; checkpoints also hold tensors under "
                f"{', '.join(map(repr, raw[1:]))} (choose with --state-key KEY)"
            )
    _check_tensors(state, path)
    return Selection(dict(state), _meta(obj, state), notes, mode, prefix)


def _check_tensors(state: dict, path: Path) -> None:
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            kind = tensor_kind(value)
            if kind is not None:
                raise InputError(f"{path}: state dict entry {key!r} is {kind}")
            continue
        if isinstance(value, Inert):
            raise InputError(
                f"{path} refused: not a plain weights file: state dict entry {key!r} is a "
                f"pickled {value._global} object (never executed)"
            )
        raise InputError(
            f"{path}: state dict entry {key!r} is a {type(value).__name__}, not a tensor"
        )
