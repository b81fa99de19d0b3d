"""The run directory a Trainer writes, and what it reads back to resume.

``alignctl.yaml`` (the resolved config), ``checkpoints/step_XXXXXXXX.safetensors`` (weights with
metadata; :mod:`alignctl.runs.checkpoints`), ``checkpoints/state/`` (resume state;
:mod:`alignctl.train.state`), ``train_log.jsonl`` (one line per evaluation) and ``run.json``
(the summary). Every file is written atomically; the state is written before the weights, so
weights on disk always have their state beside them. A write that fails (a full disk) raises
:class:`RunWriteError`, an :class:`InputError` that names the last checkpoint still intact.

run.json counts: ``steps`` optimiser steps; ``epochs_completed`` (also ``epochs_done``) full
passes over the training set; ``batches_into_epoch`` steps taken in the epoch in progress (0
on an epoch boundary). Always ``steps == epochs_completed * batches_per_epoch +
batches_into_epoch``. ``status`` is ``finished``, ``interrupted`` or ``diverged``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from alignctl._version import __version__
from alignctl.errors import InputError
from alignctl.runs.atomic import atomic_write_text, remove_stale_temporaries
from alignctl.train.jsonio import dumps_strict
from alignctl.train.state import (
    STATE_DIR,
    capture_rng,
    restore_rng,
    save_state,
    step_name,
    tensors_to,
    truncate_log,
)

RUN_FILES = ("alignctl.yaml", "checkpoints", "train_log.jsonl", "run.json")


def is_train_run(folder: Path) -> bool:
    """Whether ``alignctl train`` has written ``folder``: its log or its resume state (written
    under the folder's lock, :mod:`alignctl.train.lock`)."""
    folder = Path(folder)
    return (folder / "train_log.jsonl").exists() or (folder / "checkpoints" / STATE_DIR).is_dir()


class RunWriteError(InputError):
    """A file of the run could not be written (full disk, read-only folder, ...)."""


def prepare_run_dir(out: Path, force: bool) -> None:
    """Refuse to overwrite a run unless ``force``, and files alignctl did not write always
    (:mod:`alignctl.train.owned`); then remove only alignctl's own files.
    The caller holds the folder's :class:`alignctl.train.lock.RunLock`."""
    from alignctl.train.owned import refuse_foreign

    refuse_foreign(out, RUN_FILES)  # even with force: only alignctl's own run is replaced
    existing = [out / f for f in RUN_FILES if (out / f).exists()]
    if existing and not force:
        raise InputError(f"{out} already holds a run; use --resume to continue it or --force")
    for p in existing:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    for f in RUN_FILES:  # temporaries of a write cut short by a kill (only alignctl's names)
        for tmp in out.glob(f".{f}.tmp-*"):
            tmp.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


class RunDirMixin:
    """Needs ``dir``, ``ckpt_dir``, ``model``, ``opt``, ``regs``, ``gen``, ``cfg``, ``device``,
    the loop counters, ``diverged``, ``last_saved_step`` and ``notes`` (set by
    :class:`Trainer`)."""

    def _write_failed(self, what, e: BaseException) -> RunWriteError:
        why = getattr(e, "strerror", None)
        if not why:  # torch and safetensors hide the errno ("iostream error"): say what is left
            why = " ".join(str(e).split())[:160] or type(e).__name__
            try:
                why += f" ({shutil.disk_usage(self.dir).free // 1024} KiB free on the device)"
            except OSError:
                pass
        kept = ("no checkpoint was saved" if self.last_saved_step is None
                else f"checkpoints up to step {self.last_saved_step} are intact")  # fmt: skip
        return RunWriteError(f"cannot write {what}: {why}; {kept}; after fixing it, continue "
                             f"with alignctl train --resume {self.dir}")  # fmt: skip

    def run_state(self) -> dict:
        """Everything but the weights that a resumed run continues from (saved beside them)."""
        d = self.diverged or {}
        return {
            "optimizer": self.opt.state_dict(),
            "regularisers": [r.state_dict() for r in self.regs],
            "rng": capture_rng(self.gen),
            "step": self.step, "epoch": self.epoch, "batch_index": self.batch_index,
            "perm": self.perm if self.perm is not None else torch.empty(0, dtype=torch.long),
            "train_seconds": self.train_seconds,
            "grokked_epoch": -1 if self.grokked_epoch is None else self.grokked_epoch,
            "diverged_step": d.get("step", -1), "diverged_reason": d.get("reason", ""),
            # CPU threads change the last bits of the weights: a resume takes the same count
            "threads": torch.get_num_threads(),
        }  # fmt: skip

    def save(self) -> None:
        self.check_divergence()
        self._write_checkpoint()

    def _write_checkpoint(self) -> None:
        from alignctl.runs.checkpoints import write_checkpoint

        name = step_name(self.step)
        state = self.run_state()
        ev = self.last_eval
        meta = {
            "step": self.step, "epoch": self.epoch, "alignctl_version": __version__,
            "train_accuracy": ev.get("train_accuracy"), "test_accuracy": ev.get("test_accuracy"),
            "loss": ev.get("loss"), "regularisers": self.cfg.train.get("regularisers") or [],
        }  # fmt: skip
        meta = {k: v if isinstance(v, str) else dumps_strict(v) for k, v in meta.items()}
        target = self.ckpt_dir / f"{name}.safetensors"
        try:  # torch and safetensors report a full disk as RuntimeError / their own error
            save_state(self.ckpt_dir, self.step, state)  # state first: weights mark it complete
            write_checkpoint(target, self.model.state_dict(), meta)
        except Exception as e:
            raise self._write_failed(target, e) from None
        self.last_saved_step = self.step

    def start_new_run(self) -> None:
        """Before a new run's first write (``fit`` from step 0, not restored): the folder must
        not hold a run already (its checkpoints, log or summary would mix with this run's:
        a 3-epoch run.json over 30 epochs of checkpoints), and gets its ``alignctl.yaml`` when
        missing, so ``Trainer(dir, cfg).fit(n)`` from the library makes a run ``analyze``
        reads. ``alignctl train`` prepared the folder already (:func:`prepare_run_dir`)."""
        from alignctl.runs.config import save_config

        if self.rank != 0 or getattr(self, "_run_started", False):
            return
        ckpts = self.ckpt_dir
        held = [f for f in ("train_log.jsonl", "run.json") if (self.dir / f).exists()]
        if ckpts.is_dir() and any(p for p in ckpts.iterdir() if p.name != STATE_DIR):
            held.insert(0, "checkpoints/")
        if held:
            raise InputError(
                f"{self.dir} already holds a run ({', '.join(held)}); continue it with "
                "Trainer.restore() before fit (alignctl train --resume), or train into a new "
                "folder"
            )
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not (self.dir / "alignctl.yaml").exists():
                save_config(self.cfg, self.dir / "alignctl.yaml")
        except OSError as e:
            raise self._write_failed(self.dir / "alignctl.yaml", e) from None
        self._run_started = True

    def restore(self) -> None:
        """Continue from the newest usable checkpoint (:mod:`alignctl.train.resume`); what it
        fell back on is appended to ``notes``. The caller holds the run's lock."""
        from alignctl.train.resume import find_resume_point

        self._run_started = True  # an existing run continues: its files are its own
        remove_stale_temporaries(self.dir)  # a kill -9 inside an atomic write leaves one
        point = find_resume_point(self.ckpt_dir, self.model)
        self.notes += point.notes
        try:
            last = truncate_log(self.dir / "train_log.jsonl", point.step if point.state else -1)
        except OSError as e:
            raise self._write_failed(self.dir / "train_log.jsonl", e) from None
        if point.state is None:
            return  # the initial state of this Trainer is the run's step 0
        self.last_eval = last
        self.restored = True  # from step 0 too: epoch 0 is evaluated and saved already
        try:  # a readable state that does not fit (alignctl.yaml edited since): one line
            self.model.load_state_dict(point.weights, strict=True)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise self._misfit(point.step, e) from None
        self.load_run_state(point.state)

    def _misfit(self, step: int, e: BaseException) -> InputError:
        msg = " ".join(str(e).split())[:200]
        return InputError(f"cannot resume {self.dir} from step {step}: the saved state does "
                          f"not fit alignctl.yaml ({msg})")  # fmt: skip

    def load_run_state(self, st: dict) -> None:
        """Continue from :meth:`run_state`'s dict (the weights are the caller's). Regulariser
        state goes to the model's device (it is read onto the CPU)."""
        try:
            self.opt.load_state_dict(st["optimizer"])
            for r, rs in zip(self.regs, st["regularisers"], strict=True):
                r.load_state_dict(tensors_to(rs, self.device))
            restore_rng(st["rng"], self.gen)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise self._misfit(int(st.get("step", -1)), e) from None
        self.step, self.epoch = int(st["step"]), int(st["epoch"])
        self.batch_index = int(st["batch_index"])
        self.perm = st["perm"] if st["perm"].numel() else None
        if self.perm is None:
            self.batch_index = 0  # on an epoch boundary (older runs saved the batch count)
        self.train_seconds = float(st["train_seconds"])
        g = int(st["grokked_epoch"])
        self.grokked_epoch = None if g < 0 else g
        if int(st.get("diverged_step", -1)) >= 0:  # a run that trained on with on_nan continue
            self.diverged = {"step": int(st["diverged_step"]), "reason": st["diverged_reason"]}
        self.last_saved_step = self.step
        self.resumed_threads = int(st.get("threads", 0)) or None  # older states: unknown

    def append_log(self, ev: dict) -> None:
        path = self.dir / "train_log.jsonl"
        try:
            with open(path, "a") as fh:  # appended; a line cut short is dropped on resume
                fh.write(dumps_strict(ev) + "\n")
        except OSError as e:
            raise self._write_failed(path, e) from None

    def clear_summary(self) -> None:
        """Remove a finished run's ``run.json`` as training starts again (``--resume``): the
        run is not finished until ``write_summary``, and ``analyze --follow`` must not take
        the old file for the end. Rank 0 alone writes the folder."""
        path = self.dir / "run.json"
        if self.rank == 0 and path.exists():
            try:
                path.unlink()
            except OSError as e:
                raise self._write_failed(path, e) from None

    def write_summary(self, epochs: int, interrupted: bool) -> dict:
        ev, d = self.last_eval, self.diverged
        status = "diverged" if d else "interrupted" if interrupted else "finished"
        into = self.batch_index if self.perm is not None else 0
        summary = {
            "alignctl_version": __version__, "status": status, "epochs": epochs,
            "epochs_completed": self.epoch, "epochs_done": self.epoch,
            "batches_into_epoch": into, "batches_per_epoch": self.batches_per_epoch(),
            "steps": self.step, "last_checkpoint_step": self.last_saved_step,
            "grokked_epoch": self.grokked_epoch, "train_seconds": round(self.train_seconds, 4),
            "train_accuracy": None if d else ev.get("train_accuracy"),
            "test_accuracy": None if d else ev.get("test_accuracy"),
            "interrupted": interrupted, "diverged": d is not None,
            "diverged_step": d and d["step"], "diverged_reason": d and d["reason"],
            "device": str(self.device), "processes": self.size,
        }  # fmt: skip
        path = self.dir / "run.json"
        try:
            atomic_write_text(path, dumps_strict(summary, indent=2) + "\n")
        except OSError as e:
            raise self._write_failed(path, e) from None
        return summary
