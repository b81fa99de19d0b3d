"""Checkpoint formats: read one checkpoint into a :class:`Checkpoint`; write ours.

``.safetensors`` (metadata from ``__metadata__``; ties that ``safetensors.torch.save_model``
dropped are recorded there as ``{"dropped.name": "kept.name"}`` and become ``aliases``), torch
``.pt``/``.pth``/``.bin``/``.ckpt`` (a state dict, or a dict holding one: :mod:`.select`) and
Hugging Face style folders (``model.safetensors``, sharded ``model-0000k-of-0000n`` files +
index, or ``pytorch_model.bin``). Pickles are read by :mod:`.safe_unpickle`: torch's
weights-only rules, and nothing in them ever runs. Every file is a regular file within the
read budget, and every size a header declares is checked against the file before anything is
allocated (:mod:`alignctl.runs.limits`). Nothing is cached: memory stays flat over any number
of checkpoints.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError

from alignctl.errors import InputError
from alignctl.geometry.finite import all_finite
from alignctl.runs.atomic import atomic_save_safetensors
from alignctl.runs.checkpoints.safe_unpickle import find_inert, torch_load
from alignctl.runs.checkpoints.select import STATE_DICT_KEYS, select_state
from alignctl.runs.checkpoints.st_header import tensor_problem
from alignctl.runs.limits import check_budget, check_zip, loads_json, read_text_capped

__all__ = ["HF_FILES", "STATE_DICT_KEYS", "Checkpoint", "read_checkpoint", "read_weights"]

# Hugging Face folder layouts, in order of preference.
HF_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Names only wrappers give a submodule, never a user's model: torch.compile, FSDP (and
# fairscale's flatten-params wrapper), activation checkpointing's checkpoint_wrapper.
_WRAPPER_NAMES = ("_orig_mod", "_fsdp_wrapped_module", "_fpw_module", "_checkpoint_wrapped_module")
_MAX_HEADER = 100 * 2**20  # the safetensors format's own limit on its JSON header
_SHOW = 3


@dataclass
class Checkpoint:
    state: dict[str, torch.Tensor]  # wrapper prefixes stripped
    meta: dict  # step, epoch, ... (plain values only)
    aliases: dict[str, str] = field(default_factory=dict)  # tied name -> stored name
    notes: list[str] = field(default_factory=list)
    mode: str = "raw"  # how load_weights picks among prefixes: raw | ema | prefix
    prefix: str | None = None  # with mode "prefix": the --state-key prefix


def natural_key(name: str) -> tuple:
    """``step_9`` < ``step_10``: digit runs compare as numbers (str, int, str, ... alternate)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def read_weights(ref, *, weights: str = "raw", state_key: str | None = None) -> Checkpoint:
    """Load one checkpoint (a :class:`CheckpointRef` or anything with ``.path``)."""
    path = Path(ref.path)
    if not path.exists():
        raise InputError(f"checkpoint {path} does not exist")
    reader = _read_folder if path.is_dir() else _read_file
    ck = reader(path, weights, state_key)
    if not ck.state:
        raise InputError(f"checkpoint {path} holds no tensors")
    _strip_wrappers(ck)
    return ck


def read_checkpoint(ref, **options) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict with wrapper prefixes stripped, metadata): :func:`read_weights` in short."""
    ck = read_weights(ref, **options)
    return ck.state, ck.meta


def parse_metadata(raw: dict[str, str] | None) -> dict:
    """safetensors metadata values are strings; decode the ones that are JSON."""
    out: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        try:
            out[key] = loads_json(value)
        except (json.JSONDecodeError, TypeError):
            out[key] = value
    return out


def safetensors_header(path: Path, what: str = "checkpoint") -> dict:
    """The JSON header of a safetensors file, after checking that the sizes it declares are the
    file's own (a truncated, padded or sparse-extended file is refused here, unread) and that
    its tensors tile the data as the format requires (:mod:`.st_header`)."""
    size = check_budget(path, what)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or n > min(_MAX_HEADER, size - 8):
                raise ValueError("header length out of range")
            header = loads_json(fh.read(n).decode("utf-8"))  # no BOM, as the library
        problem = tensor_problem(header) if isinstance(header, dict) else "not a JSON object"
        if problem:
            raise ValueError(problem)
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise InputError(f"cannot read safetensors {what} {path}: {_first_line(e)}") from None
    if 8 + n + max(ends, default=0) != size:
        raise InputError(
            f"cannot read safetensors {what} {path}: its header does not describe the file's "
            f"{size} bytes (truncated or padded)"
        )
    return header


def flat_checkpoint(ck: Checkpoint, weights: str, state_key: str | None) -> Checkpoint:
    """A file that is only a state dict (no keys around it): ``state_key`` is a prefix, and an
    EMA copy can only be a prefix too; :func:`load_weights` chooses."""
    if state_key is not None:
        ck.mode, ck.prefix = "prefix", state_key.rstrip(".") + "."
    elif weights == "ema":
        ck.mode = "ema"
    return ck


def _read_safetensors(path: Path, weights: str, state_key: str | None) -> Checkpoint:
    header = safetensors_header(path)
    # From bytes: safe_open's get_tensor leaks ~60 B per tensor (safetensors 0.8); flat wins.
    try:
        state = safetensors.torch.load(path.read_bytes())
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"cannot read safetensors file {path}: {_first_line(e)}") from None
    raw_meta = header.get("__metadata__") or {}
    aliases = {
        k: v for k, v in raw_meta.items() if isinstance(v, str) and v in state and k not in state
    }
    return flat_checkpoint(Checkpoint(state, parse_metadata(raw_meta), aliases), weights, state_key)


def _read_torch(path: Path, weights: str, state_key: str | None) -> Checkpoint:
    check_zip(path, "checkpoint")
    try:
        obj, replaced = torch_load(path)
    except InputError:
        raise
    except Exception as e:  # torch raises KeyError/EOFError/RuntimeError... on bad files
        text = str(e)
        if "weights only" in text.lower() or "weights_only" in text:
            raise InputError(
                f"{path} refused: not a plain weights file (weights_only loading)"
            ) from None
        if isinstance(e, OSError):
            raise InputError(f"cannot read {path}: {e.strerror or e}") from None
        why = _first_line(e).split(". ")[0] or type(e).__name__  # torch appends advice
        raise InputError(f"cannot read {path}: corrupt or truncated torch file ({why})") from None
    sel = select_state(obj, path, weights=weights, state_key=state_key)
    if replaced:
        spots = [f"{name} at {where}" for where, name in find_inert(obj)] or replaced
        more = f" and {len(spots) - _SHOW} more" if len(spots) > _SHOW else ""
        sel.notes.append(
            "objects torch does not load by default were replaced by inert placeholders "
            f"(never imported or called; only tensors and plain numbers are read): "
            f"{', '.join(spots[:_SHOW])}{more}"
        )
    return Checkpoint(sel.state, sel.meta, {}, sel.notes, sel.mode, sel.prefix)


def hf_main_file(folder: Path) -> Path:
    for name in HF_FILES:
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{folder} is not a Hugging Face style folder ({', '.join(HF_FILES)})")


def _shard_names(index: Any, main: Path) -> list[str]:
    """The shard files an index names, each a plain path inside its folder; InputError else."""
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise InputError(f"malformed shard index {main}: expected a mapping with a 'weight_map'")
    meta = index.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise InputError(
            f"malformed shard index {main}: 'metadata' must be a mapping, got {type(meta).__name__}"
        )
    names = set()
    for key, shard in index["weight_map"].items():
        if not isinstance(key, str) or not isinstance(shard, str):
            raise InputError(f"malformed shard index {main}: weight_map entries must be strings")
        parts = PurePosixPath(shard.replace("\\", "/")).parts
        if not parts or shard.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            raise InputError(
                f"shard index {main} names {shard!r}, outside its folder: refused (shards must "
                "be files inside the index's folder)"
            )
        if not shard.endswith((".safetensors", ".bin")):
            raise InputError(f"shard index {main} names {shard!r}, not a .safetensors/.bin file")
        names.add(shard)
    return sorted(names, key=natural_key)


def _load_index(main: Path) -> tuple[dict, list[str]]:
    try:
        index = loads_json(read_text_capped(main, "shard index"))
    except json.JSONDecodeError as e:
        raise InputError(f"malformed shard index {main}: {_first_line(e)}") from None
    return index, _shard_names(index, main)


def shard_names(main: Path) -> list[str]:
    """The shard files a Hugging Face index file names (checked as :func:`_shard_names`)."""
    return _load_index(main)[1]


def _read_folder(folder: Path, weights: str, state_key: str | None) -> Checkpoint:
    """A Hugging Face style folder, else a training engine's (:mod:`.engines`)."""
    from alignctl.runs.checkpoints import dcp, engines  # they read through this module

    engine = (
        None if any((folder / f).is_file() for f in HF_FILES) else engines.engine_folder(folder)
    )
    if engine is None:
        return _read_hf_folder(folder, weights, state_key)
    kind, where = engine
    if kind == "dcp":
        return dcp.read_dcp(where, weights, state_key)
    return _read_file(where, weights, state_key)


def _read_hf_folder(folder: Path, weights: str, state_key: str | None) -> Checkpoint:
    main = hf_main_file(folder)
    if not main.name.endswith(".index.json"):
        return _read_file(main, weights, state_key)
    index, shards = _load_index(main)
    out = Checkpoint({}, {})
    for shard in shards:
        shard_path = folder / shard
        if not shard_path.exists():
            raise InputError(f"shard {shard_path} listed in {main.name} is missing")
        part = _read_file(shard_path, "raw", None)
        out.state.update(part.state)
        out.aliases.update(part.aliases)
        out.meta = out.meta or part.meta
    out.meta = {**out.meta, **(index.get("metadata") or {})}
    return flat_checkpoint(out, weights, state_key)


def _read_file(path: Path, weights: str, state_key: str | None) -> Checkpoint:
    if path.suffix == ".safetensors":
        return _read_safetensors(path, weights, state_key)
    return _read_torch(path, weights, state_key)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def wrapper_strip(keys) -> Callable[[str], str]:
    """The renaming that drops wrapper names from the keys of one state dict: anywhere (a
    wrapped submodule nests them), the names of :data:`_WRAPPER_NAMES` (torch.compile's
    ``_orig_mod``, FSDP's ``_fsdp_wrapped_module``, ``checkpoint_wrapper``'s
    ``_checkpoint_wrapped_module``), never part of a user's module names; and the leading
    ``module.`` of DDP / AveragedModel only when every key has it (``n_averaged`` aside), as a
    wrapper gives it: a model's own child named ``module`` (``self.module``, ``self.head``)
    keeps its name. Any other ``module.`` prefix is found by :mod:`.loading`'s prefix search."""
    split = {k: [p for p in k.split(".") if p not in _WRAPPER_NAMES] for k in keys}
    own = [parts for k, parts in split.items() if k != "n_averaged"]
    depth = 0
    while own and all(len(p) > depth + 1 and p[depth] == "module" for p in own):
        depth += 1

    def strip(key: str) -> str:
        parts = split.get(key) or [p for p in key.split(".") if p not in _WRAPPER_NAMES]
        wrapped = len(parts) > depth and parts[:depth] == ["module"] * depth
        return ".".join(parts[depth:] if wrapped else parts)

    return strip


def _strip_wrappers(ck: Checkpoint) -> None:
    strip = wrapper_strip(ck.state)
    ck.state = {strip(k): v for k, v in ck.state.items()}
    ck.aliases = {strip(k): strip(v) for k, v in ck.aliases.items()}


def write_checkpoint(path: Path, state_dict: dict, metadata: dict) -> None:
    """Atomically write a safetensors checkpoint; non-string metadata is stored as JSON."""
    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    atomic_save_safetensors(state_dict, path, meta)


def is_finite_state(state_dict: dict) -> bool:
    """True when every floating-point tensor is free of NaN and inf."""
    return all(all_finite(v) for v in state_dict.values() if isinstance(v, torch.Tensor))
