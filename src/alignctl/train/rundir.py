"""The run directory a Trainer writes, and what it reads back to resume.

``alignctl.yaml`` (the resolved config), ``checkpoints/step_XXXXXXXX.safetensors`` (weights with
metadata; :mod:`alignctl.runs.checkpoints`), ``checkpoints/state/`` (resume state;
:mod:`alignctl.train.state`), ``train_log.jsonl`` (one line per evaluation) and ``run.json``
(the summary). Every file is written atomically; the state is written before the weights, so
weights on disk always have their state beside them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from alignctl._version import __version__
from alignctl.errors import InputError
from alignctl.runs.atomic import atomic_write_text, remove_stale_temporaries
from alignctl.train.state import (
    capture_rng,
    latest_resumable,
    load_state,
    restore_rng,
    save_state,
    step_name,
    truncate_log,
)

RUN_FILES = ("alignctl.yaml", "checkpoints", "train_log.jsonl", "run.json")


def prepare_run_dir(out: Path, force: bool) -> None:
    """Refuse to overwrite a run unless ``force``; then remove only alignctl's own files."""
    existing = [out / f for f in RUN_FILES if (out / f).exists()]
    if existing and not force:
        raise InputError(f"{out} already holds a run; use --resume to continue it or --force")
    for p in existing:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)


class RunDirMixin:
    """Needs ``dir``, ``ckpt_dir``, ``model``, ``opt``, ``regs``, ``gen``, ``cfg``, ``device``
    and the loop counters (set by :class:`Trainer`)."""

    def save(self) -> None:
        from alignctl.runs.checkpoints import write_checkpoint

        name = step_name(self.step)
        state = {
            "optimizer": self.opt.state_dict(),
            "regularisers": [r.state_dict() for r in self.regs],
            "rng": capture_rng(self.gen),
            "step": self.step, "epoch": self.epoch, "batch_index": self.batch_index,
            "perm": self.perm if self.perm is not None else torch.empty(0, dtype=torch.long),
            "train_seconds": self.train_seconds,
            "grokked_epoch": -1 if self.grokked_epoch is None else self.grokked_epoch,
        }  # fmt: skip
        save_state(self.ckpt_dir, self.step, state)  # state first: weights mark it complete
        ev = self.last_eval
        meta = {
            "step": self.step, "epoch": self.epoch, "alignctl_version": __version__,
            "train_accuracy": ev.get("train_accuracy"), "test_accuracy": ev.get("test_accuracy"),
            "loss": ev.get("loss"), "regularisers": self.cfg.train.get("regularisers") or [],
        }  # fmt: skip
        write_checkpoint(self.ckpt_dir / f"{name}.safetensors", self.model.state_dict(), meta)

    def restore(self) -> None:
        from alignctl.runs.checkpoints import CheckpointRef, load_weights, read_checkpoint

        remove_stale_temporaries(self.dir)  # a kill -9 inside an atomic write leaves one
        found = latest_resumable(self.ckpt_dir)
        if found is None:
            raise InputError(f"{self.ckpt_dir} holds no resumable checkpoint")
        weights, state_path = found
        sd, _ = read_checkpoint(CheckpointRef(weights, weights.stem, None))
        load_weights(self.model, sd, weights.name)
        st = load_state(state_path)
        self.opt.load_state_dict(st["optimizer"])
        for r, rs in zip(self.regs, st["regularisers"], strict=True):
            r.load_state_dict(rs)
        restore_rng(st["rng"], self.gen)
        self.step, self.epoch = int(st["step"]), int(st["epoch"])
        self.batch_index = int(st["batch_index"])
        self.perm = st["perm"] if st["perm"].numel() else None
        self.train_seconds = float(st["train_seconds"])
        g = int(st["grokked_epoch"])
        self.grokked_epoch = None if g < 0 else g
        truncate_log(self.dir / "train_log.jsonl", self.step)

    def append_log(self, ev: dict) -> None:
        with open(self.dir / "train_log.jsonl", "a") as fh:  # appended; truncated on resume
            fh.write(json.dumps(ev) + "\n")

    def write_summary(self, epochs: int, interrupted: bool) -> dict:
        ev = self.last_eval
        summary = {
            "alignctl_version": __version__, "epochs_done": self.epoch, "epochs": epochs,
            "steps": self.step, "grokked_epoch": self.grokked_epoch,
            "train_seconds": round(self.train_seconds, 4),
            "train_accuracy": ev.get("train_accuracy"), "test_accuracy": ev.get("test_accuracy"),
            "interrupted": interrupted, "device": str(self.device),
        }  # fmt: skip
        atomic_write_text(self.dir / "run.json", json.dumps(summary, indent=2) + "\n")
        return summary
