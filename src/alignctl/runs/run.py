"""Finding what ``alignctl analyze PATH`` loads: the config, the checkpoints, the model and data.

PATH may be a run directory (``alignctl.yaml`` plus ``checkpoints/``, or checkpoint files
beside the config), a checkpoint folder whose parent holds ``alignctl.yaml``, or a single
checkpoint file (config from its folder or that folder's parent). ``--config`` replaces the
file found; ``--model`` / ``--data`` replace the config's ``model:`` / ``data:`` sections.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignctl.errors import InputError, short
from alignctl.runs.checkpoints import (
    ACCEPTED,
    EXPORTED,
    WEIGHTS,
    CheckpointRef,
    discover_checkpoints,
    is_checkpoint_name,
    load_weights,
    read_weights,
)
from alignctl.runs.limits import expand_user, kind_of
from alignctl.runs.validate import not_found

CONFIG_NAME = "alignctl.yaml"
CHECKPOINT_FOLDER = "checkpoints"
DATA_SUFFIXES = (".npz", ".safetensors", ".pt")


@dataclass
class Run:
    root: Path  # the run directory (where alignctl.yaml is, if any)
    config: Any  # alignctl.config.Config, with --model / --data applied
    checkpoints: list[CheckpointRef]
    _data: Any = field(default=None, repr=False)
    # What the user should know but that does not stop the analysis (files skipped, keys
    # ignored, a fallback taken): one line each; ``analyze`` copies them into the report and
    # the CLI prints them on stderr as ``note: ...``. The library itself never prints.
    notes: list[str] = field(default_factory=list)
    weights: str = "raw"  # raw | ema: which copy of the weights (the config's checkpoint.weights)
    state_key: str | None = None  # a checkpoint key or state-dict prefix (checkpoint.state_key)
    source: Path | None = None  # the path open_run was given (a file, a folder, the run)

    def note(self, text: str) -> None:
        """Record a note once (the same fact about every checkpoint is one line)."""
        if text not in self.notes:
            self.notes.append(text)

    def load_checkpoint(self, model: torch.nn.Module, ref: CheckpointRef,
                        notes: list[str] | None = None):  # fmt: skip
        """Read ``ref`` and load its weights into ``model``; returns (the model's state dict as
        loaded, the checkpoint's metadata). What was chosen or ignored becomes notes (of the
        run, once each; ``notes`` receives this checkpoint's, repeated or not)."""
        from alignctl.runs.checkpoints.stable import read_stably

        # a writer rewriting the file in place during the read: read again (.stable)
        meta, texts = read_stably(ref.path, lambda: self._read_into(model, ref))
        for text in texts:
            self.note(text)
            if notes is not None and text not in notes:
                notes.append(text)
        # The weights as loaded: an ignored EMA copy or loss buffer never marks a checkpoint
        # diverged.
        return model.state_dict(), meta

    def _read_into(self, model: torch.nn.Module, ref: CheckpointRef):
        """(metadata, notes) of ``ref``, its weights loaded into ``model``."""
        from alignctl.runs.checkpoints.stream import stream_checkpoint

        # safetensors: tensor by tensor into the model; the rest: a state dict, then loaded.
        streamed = stream_checkpoint(model, ref, weights=self.weights, state_key=self.state_key)
        if streamed is not None:
            return streamed
        ck = read_weights(ref, weights=self.weights, state_key=self.state_key)
        texts = ck.notes + load_weights(
            model, ck.state, Path(ref.path).name, aliases=ck.aliases, mode=ck.mode,
            prefix=ck.prefix,
        )  # fmt: skip
        return ck.meta, texts

    def input_files(self) -> list[Path]:
        """Every file an analysis of this run reads: its checkpoints (each file of a folder
        checkpoint), its config, its data file and factory files. A command's outputs must
        name none of them (the CLI refuses one that does: it would replace an input)."""
        from alignctl.runs.config import _absolute_paths

        files = [Path(self.config.path)] if getattr(self.config, "path", None) else []
        for ref in self.checkpoints:
            p = Path(ref.path)
            files += list(p.iterdir()) if p.is_dir() else [p]
        for section in (self.config.model, self.config.data):
            resolved = _absolute_paths(section or {}, Path(self.config.base_dir))
            if isinstance(resolved.get("path"), str):
                files.append(Path(resolved["path"]))
            if isinstance(resolved.get("factory"), str):
                files.append(Path(resolved["factory"].rsplit(":", 1)[0]))
        return files

    def build_model(self) -> torch.nn.Module:
        """A fresh, untrained network of the run's architecture (weights come from checkpoints)."""
        from alignctl.runs.models import build_model

        return build_model(self.config.model, self.config.base_dir)

    def load_data(self):
        """The run's dataset; loaded once, then cached (it is the same for every checkpoint)."""
        if self._data is None:
            from alignctl.runs.tasks import load_data

            self._data = load_data(self.config.data, self.config.base_dir)
        return self._data


def open_run(
    path: Path,
    *,
    config: Path | None = None,
    model: str | None = None,
    data: str | None = None,
    weights: str | None = None,
    state_key: str | None = None,
) -> Run:
    """Resolve PATH (+ overrides) to a :class:`Run`; InputError names whatever is missing.

    ``weights``: ``"raw"`` or ``"ema"`` (an EMA copy); ``state_key``: the checkpoint key
    (``net``, ``model_ema``) or state-dict prefix holding the model's weights. Both default to
    the config's ``checkpoint:`` section, else raw weights found automatically."""
    from alignctl.runs.limits import as_path

    path = as_path(path, "path")
    config = None if config is None else as_path(config, "config")
    try:
        run = _open_run(path, config, model, data, weights, state_key)
    except OSError as e:  # a folder we may not enter (mode 000), a file we may not read
        raise InputError(f"cannot read {e.filename or path}: {e.strerror or e}") from None
    run.source = path  # what the report's title names: root is the config's folder
    return run


def _open_run(path, config, model, data, weights, state_key) -> Run:
    model, data = (os.fspath(v) if isinstance(v, os.PathLike) else v for v in (model, data))
    for name, value in (("model", model), ("data", data), ("weights", weights),
                        ("state_key", state_key)):  # fmt: skip
        if value is not None and not isinstance(value, str):
            raise InputError(f"{name} must be a string (a name or a file), not "
                             f"{type(value).__name__}")  # fmt: skip
    if weights is not None and weights not in WEIGHTS:
        raise InputError(f"unknown --weights {short(weights)}; valid: {', '.join(WEIGHTS)}")
    if state_key is not None and not state_key.strip(". "):
        raise InputError("--state-key must name a key, e.g. --state-key model_ema")
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if not path.is_dir() and not path.is_file():
        kind = kind_of(path.stat().st_mode)
        raise InputError(f"{path} is {kind}: pass a run directory, a checkpoint folder or file")
    if path.is_file() and path.suffix == ".pt2":
        raise InputError(f"{path} {EXPORTED}")
    if path.is_file() and not is_checkpoint_name(path):
        raise InputError(
            f"{path} is not a checkpoint file ({ACCEPTED}); "
            "pass a run directory, a checkpoint folder or a checkpoint file"
        )
    folder = path.parent if path.is_file() else path
    # A run directory keeps its weights in checkpoints/ (else beside the config); any other
    # folder is itself the checkpoint folder. Checkpoints first: an empty folder says so.
    sub = path / CHECKPOINT_FOLDER
    notes: list[str] = []
    try:
        checkpoints = discover_checkpoints(sub if path.is_dir() and sub.is_dir() else path, notes)
    except InputError as e:  # none beside the config: say what checkpoints/ is instead
        if not path.is_dir() or sub.is_dir() or not os.path.lexists(sub):
            raise
        what = "a broken link" if not sub.exists() else kind_of(sub.stat().st_mode) or "a file"
        raise InputError(f"{sub} is {what}, not a folder of checkpoints ({e})") from None
    # A folder that is one checkpoint (checkpoint-500/, global_step100/) sits where a file would
    one = path.is_dir() and [Path(r.path) for r in checkpoints] == [path]
    found = _find_config(folder.parent if one else folder, also=folder if one else None)
    root = found.parent if found is not None else folder
    cfg = _resolve_config(config or found, folder, model, data)
    section = getattr(cfg, "checkpoint", None) or {}
    return Run(
        root=root, config=cfg, checkpoints=checkpoints, notes=notes,
        weights=weights or section.get("weights") or "raw",
        state_key=state_key if state_key is not None else section.get("state_key"),
    )  # fmt: skip


def _find_config(folder: Path, also: Path | None = None) -> Path | None:
    """``alignctl.yaml`` in ``also`` (a checkpoint folder's own), ``folder`` or its parent."""
    places = [also] if also is not None else []
    for candidate in (p / CONFIG_NAME for p in (*places, folder, folder.parent)):
        if candidate.exists():  # a FIFO or a folder of that name is refused when read
            return candidate
    return None


def _resolve_config(file: Path | None, folder: Path, model: str | None, data: str | None):
    from alignctl.runs.config import config_from_dict, load_config

    cfg = load_config(Path(file)) if file is not None else None
    if cfg is None and model is None and data is None:
        raise InputError(
            f"no {CONFIG_NAME} found in {folder} or its parent; pass --config or --model and --data"
        )
    model_spec = _model_spec(model, cfg) if model else getattr(cfg, "model", None)
    data_spec = _data_spec(data, cfg) if data else getattr(cfg, "data", None)
    for what, spec in (("model", model_spec), ("data", data_spec)):
        if not spec:
            src = f"{cfg.path} has no {what} section" if cfg else f"no {CONFIG_NAME} found"
            raise InputError(f"cannot tell the {what}: {src}; pass --{what} or --config")
    if cfg is None:
        raw = {"model": model_spec, "data": data_spec}
        return config_from_dict(raw, Path.cwd(), source="--model/--data")
    return _with_sections(cfg, model=model_spec, data=data_spec)


def _with_sections(cfg, **sections):
    if dataclasses.is_dataclass(cfg):
        return dataclasses.replace(cfg, **sections)
    cfg = copy.copy(cfg)
    for key, value in sections.items():
        setattr(cfg, key, value)
    return cfg


def _model_spec(model: str, cfg) -> dict:
    """``--model``: an arch name (sizes from the config's section of the same arch) or a
    ``file.py:callable`` factory, relative to the current directory."""
    if ":" in model:
        return {"factory": _absolute_factory(model)}
    section = getattr(cfg, "model", None) or {}
    if section.get("arch") == model:
        return dict(section)
    from alignctl.runs.models import MODELS, check_kwargs

    if model not in MODELS:  # a factory file without its callable is the usual slip
        if model.endswith(".py") or "/" in model or "\\" in model:
            raise InputError(f"--model {model}: name the function in it that returns the model, "
                             f"e.g. --model {model}:make_net (FILE.py:CALLABLE)")  # fmt: skip
        valid = ", ".join(MODELS.names())
        raise InputError(f"--model {model}: unknown architecture; valid: {valid}, "
                         "or your own as FILE.py:CALLABLE")  # fmt: skip
    try:
        check_kwargs(MODELS.get(model), {}, f"--model {model}")
    except InputError as e:
        # Built from defaults only when the architecture has no required sizes.
        raise InputError(f"{e}; pass --config with a model section (arch: {model}, ...)") from None
    return {"arch": model}


def _absolute_factory(spec: str) -> str:
    # The config's base_dir is the run directory, but --model paths are relative to the cwd.
    target, name = spec.rsplit(":", 1)
    if target.endswith(".py") or "/" in target or "\\" in target:
        target = str(expand_user(target).resolve())
    return f"{target}:{name}"


def _data_spec(data: str, cfg) -> dict:
    """``--data``: a data file (.npz/.safetensors/.pt) or a task name (its parameters from the
    config's section of the same task)."""
    file = expand_user(data)
    if file.suffix in DATA_SUFFIXES or "/" in data or file.is_file():
        if not file.is_file():
            raise not_found("data file", data)
        return {"path": str(file.resolve())}
    section = getattr(cfg, "data", None) or {}
    return dict(section) if section.get("task") == data else {"task": data}
