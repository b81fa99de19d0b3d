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

import json
from pathlib import Path

from alignctl.errors import InputError

MAX_RUN_JSON = 1 << 20  # alignctl's run.json is ~1 KiB; a larger one is not ours


def foreign_files(folder: Path, run_files: tuple[str, ...]) -> list[str]:
    """The run files of ``folder`` (names among ``run_files``) that alignctl did not write."""
    from alignctl.train.resume import _only_alignctl_files

    folder = Path(folder)
    present = [f for f in run_files if (folder / f).exists()]
    if not present:
        return []
    if "alignctl.yaml" not in present:  # written first: every alignctl run has it
        return [f for f in present if f != "alignctl.yaml"]
    out = []
    if "checkpoints" in present and not _only_alignctl_files(folder / "checkpoints"):
        out.append("checkpoints/ (files alignctl did not write)")
    if "run.json" in present and not _ours(folder / "run.json"):
        out.append("run.json")
    return out


def _ours(path: Path) -> bool:
    try:
        if not path.is_file() or path.stat().st_size > MAX_RUN_JSON:
            return False
        summary = json.loads(path.read_text())
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


def same_config(folder: Path, cfg, ignore=("epochs",)) -> bool:
    """Whether ``folder/alignctl.yaml`` is the config ``cfg`` saves as (the ``train`` keys in
    ``ignore`` aside): a race reuses or retrains only its own pairs."""
    import yaml

    from alignctl.runs.safe_yaml import load_file

    try:
        saved = load_file(folder / "alignctl.yaml")
    except InputError:
        return False
    mine = yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    for d in (saved, mine):
        if isinstance(d, dict) and isinstance(d.get("train"), dict):
            for k in ignore:
                d["train"].pop(k, None)
    return saved == mine
