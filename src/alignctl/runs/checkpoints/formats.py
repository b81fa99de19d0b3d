"""Checkpoint formats: read one checkpoint into (state dict, metadata); write ours.

``.safetensors`` (metadata from ``__metadata__``), torch ``.pt``/``.pth``/``.bin`` (a state
dict, or a dict holding one under ``state_dict``/``model``/``model_state_dict``), Lightning
``.ckpt`` (``state_dict`` + ``global_step``) and Hugging Face style folders
(``model.safetensors``, sharded ``model-0000k-of-0000n.safetensors`` + index, or
``pytorch_model.bin``). Pickles are only ever read with ``torch.load(weights_only=True)``, so
a file that tries to run code is refused, never executed. Nothing is cached: each
``read_checkpoint`` loads one checkpoint, so memory stays flat over any number of them.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError

from alignctl.errors import InputError
from alignctl.runs.atomic import atomic_save_safetensors

# Hugging Face folder layouts, in order of preference.
HF_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")
_ALWAYS_STRIP = ("module.", "_orig_mod.")  # DDP / torch.compile wrappers


def natural_key(name: str) -> tuple:
    """``step_9`` < ``step_10``: digit runs compare as numbers (str, int, str, ... alternate)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def read_checkpoint(ref) -> tuple[dict[str, torch.Tensor], dict]:
    """Load one checkpoint: (state_dict with wrapper prefixes stripped, metadata)."""
    path = Path(ref.path)
    if not path.exists():
        raise InputError(f"checkpoint {path} does not exist")
    state, meta = _read_hf_folder(path) if path.is_dir() else _read_file(path)
    if not state:
        raise InputError(f"checkpoint {path} holds no tensors")
    return _strip_wrappers(state), meta


def _parse_metadata(raw: dict[str, str] | None) -> dict:
    """safetensors metadata values are strings; decode the ones that are JSON."""
    out: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        try:
            out[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            out[key] = value
    return out


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    # From bytes: safe_open's get_tensor leaks ~60 B per tensor (safetensors 0.8); flat wins.
    try:
        data = path.read_bytes()
        state = safetensors.torch.load(data)
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])  # valid: load ok
        meta = _parse_metadata(header.get("__metadata__"))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"cannot read safetensors file {path}: {_first_line(e)}") from None
    return state, meta


def _torch_load(path: Path, mmap: bool = False) -> Any:
    with warnings.catch_warnings():
        # torch warns about pickle protocols it merely tolerates; the library never prints.
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _read_torch(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        obj = _torch_load(path)
    except Exception as e:  # torch raises KeyError/EOFError/RuntimeError... on bad files
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise InputError(
                f"{path} refused: not a plain weights file (weights_only loading)"
            ) from None
        why = _first_line(e) or type(e).__name__
        raise InputError(f"cannot read {path}: corrupt or truncated torch file ({why})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path} holds no state dict (found {type(obj).__name__})")
    for key in STATE_DICT_KEYS:
        if isinstance(obj.get(key), dict):
            state = obj[key]
            meta = {k: v for k, v in obj.items() if isinstance(v, (int, float, str, bool))}
            break
    else:
        if not any(isinstance(v, torch.Tensor) for v in obj.values()):
            raise InputError(
                f"{path} holds no state dict (expected a dict of tensors, or one under "
                f"{', '.join(repr(k) for k in STATE_DICT_KEYS)})"
            )
        state, meta = obj, {}
    bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        kind = type(state[bad]).__name__
        raise InputError(f"{path}: state dict entry {bad!r} is a {kind}, not a tensor")
    return dict(state), meta


def _hf_main_file(folder: Path) -> Path:
    for name in HF_FILES:
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{folder} is not a Hugging Face style folder ({', '.join(HF_FILES)})")


def _read_hf_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    main = _hf_main_file(folder)
    if not main.name.endswith(".index.json"):
        return _read_file(main)
    try:
        index = json.loads(main.read_text())
        shards = sorted(set(index["weight_map"].values()), key=natural_key)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"malformed shard index {main}: {_first_line(e)}") from None
    state: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    for shard in shards:
        shard_path = folder / shard
        if not shard_path.is_file():
            raise InputError(f"shard {shard_path} listed in {main.name} is missing")
        part, part_meta = _read_file(shard_path)
        state.update(part)
        meta = meta or part_meta
    return state, {**meta, **(index.get("metadata") or {})}


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    return _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch(path)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def _strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DDP's leading ``module.`` and torch.compile's ``_orig_mod.`` (anywhere: a compiled
    submodule nests it); neither is ever part of a user's module names."""
    out = {}
    for key, value in state.items():
        key = key.replace("._orig_mod.", ".")
        while key.startswith(_ALWAYS_STRIP):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def write_checkpoint(path: Path, state_dict: dict, metadata: dict) -> None:
    """Atomically write a safetensors checkpoint; non-string metadata is stored as JSON."""
    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    atomic_save_safetensors(state_dict, path, meta)


def is_finite_state(state_dict: dict) -> bool:
    """True when every floating-point tensor is free of NaN and inf."""
    return all(
        bool(torch.isfinite(v).all())
        for v in state_dict.values()
        if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex())
    )
