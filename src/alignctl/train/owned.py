"""Whether a folder's run files are alignctl's own: what ``train --force`` and a race may
replace. A file alignctl did not write is never deleted or replaced (docs/training.md).

``alignctl train`` writes ``alignctl.yaml`` before anything else of a run, its ``run.json``
names the alignctl version, and its ``checkpoints/`` holds only step files, the state folder
and hidden temporaries (:func:`alignctl.train.resume._only_alignctl_files`). A
``checkpoints/``, ``run.json`` or ``train_log.jsonl`` beside no ``alignctl.yaml``, a
``run.json`` without ``alignctl_version`` or a ``checkpoints/`` holding other files is
someone else's.
"""

from __future__ import annotations

import os
from pathlib import Path

from alignctl.errors import InputError
from alignctl.runs.limits import loads_json

MAX_RUN_JSON = 1 << 20  # alignctl's run.json is ~1 KiB; a larger one is not ours


def foreign_files(folder: Path, run_files: tuple[str, ...]) -> list[str]:
    """The run files of ``folder`` (names among ``run_files``) that alignctl did not write."""
    folder = Path(folder)
    present = [f for f in run_files if (folder / f).exists()]
    if not present:
        return []
    if "alignctl.yaml" not in present:  # written first: every alignctl run has it
        return [f for f in present if f != "alignctl.yaml"]
    return foreign_outputs(folder)


def foreign_outputs(folder: Path) -> list[str]:
    """``checkpoints/`` and ``run.json`` of ``folder`` that alignctl did not write, whatever
    else the folder holds (``Monitor(overwrite=True)`` replaces only its own too)."""
    from alignctl.train.resume import _only_alignctl_files

    folder, out = Path(folder), []
    if (folder / "checkpoints").exists() and not _only_alignctl_files(folder / "checkpoints"):
        out.append("checkpoints/ (files alignctl did not write)")
    if (folder / "run.json").exists() and not _ours(folder / "run.json"):
        out.append("run.json")
    return out


def refuse_live_writer(folder: Path) -> None:
    """InputError when another process that still runs writes ``folder`` now (its writer
    record, :mod:`alignctl.runs.writer`: an ``alignctl.Monitor``, which holds no lock, or a
    trainer whose lock ``flock`` cannot see): taking the folder over would delete or mix its
    files and stop that training at its next measurement. A record of this process, or of a
    process that is gone or cannot be told about, does not refuse."""
    from alignctl.runs.writer import read_record, writer_alive

    rec = read_record(folder)
    if rec is None or rec["pid"] == os.getpid() or writer_alive(folder) is not True:
        return
    raise InputError(
        f"{folder} is being written by process {rec['pid']} (an alignctl.Monitor or trainer "
        "that still runs); nothing was changed: wait for it to finish or use another folder"
    )


def _ours(path: Path) -> bool:
    try:
        if not path.is_file() or path.stat().st_size > MAX_RUN_JSON:
            return False
        summary = loads_json(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(summary, dict) and "alignctl_version" in summary


def refuse_foreign(folder: Path, run_files: tuple[str, ...]) -> None:
    """InputError naming the files of ``folder`` that alignctl did not write, if any."""
    foreign = foreign_files(folder, run_files)
    if foreign:
        raise InputError(
            f"{folder} holds {', '.join(foreign)} that alignctl train did not write; nothing "
            "was changed: choose another --out, or move them away"
        )


def refuse_replacing(folder: Path, instead: str) -> None:
    """InputError when ``folder``'s run may not be replaced: another live process writes it
    (:func:`refuse_live_writer`) or its ``checkpoints/`` or ``run.json`` are not alignctl's."""
    refuse_live_writer(folder)
    foreign = foreign_outputs(folder)
    if foreign:
        raise InputError(f"{folder} holds {', '.join(foreign)} that alignctl did not write; "
                         f"nothing was changed: {instead}")  # fmt: skip


def same_config(folder: Path, cfg, ignore=("epochs",)) -> bool:
    """Whether ``folder/alignctl.yaml`` is the config ``cfg`` saves as (the ``train`` keys in
    ``ignore`` aside): a race reuses or retrains only its own pairs."""
    import yaml

    from alignctl.runs.safe_yaml import load_file

    try:
        saved = load_file(folder / "alignctl.yaml")
    except InputError:
        return False
    from alignctl.runs.config import TRAIN_DEFAULTS

    mine = yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    for d in (saved, mine):
        if isinstance(d, dict) and isinstance(d.get("train"), dict):
            for k in ignore:
                d["train"].pop(k, None)
            for k, v in TRAIN_DEFAULTS.items():  # a key added since the folder was written
                if k not in ignore:
                    d["train"].setdefault(k, v)
    return saved == mine
