"""The training loop behind ``alignctl train``: presets or user configs, regularisers as
plug-ins, self-describing run directories, exact resume.

A run directory holds ``alignctl.yaml`` (the fully resolved config), ``checkpoints/``
(``step_XXXXXXXX.safetensors`` with metadata, and ``state/`` for resuming),
``train_log.jsonl`` (one line per evaluation) and ``run.json`` (the summary). Every file is
written atomically. On the CPU a run that is killed and resumed ends with the same weights,
bit for bit, as one that was not: the optimiser, regulariser, data-order and RNG states are
saved with each checkpoint, and a resumed epoch replays the saved permutation.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ._version import __version__
from .atomic import atomic_write_text
from .devices import resolve_device
from .errors import InputError
from .evaluation import evaluate, is_grokked
from .trainstate import (
    capture_rng,
    latest_resumable,
    load_state,
    restore_rng,
    save_epochs,
    save_state,
    step_name,
    truncate_log,
)  # fmt: skip

RUN_FILES = ("alignctl.yaml", "checkpoints", "train_log.jsonl", "run.json")


def prepare_run_dir(out: Path, force: bool) -> None:
    """Refuse to overwrite a run unless ``force``; then remove only alignctl's own files."""
    existing = [out / f for f in RUN_FILES if (out / f).exists()]
    if existing and not force:
        raise InputError(f"{out} already holds a run; use --resume to continue it or --force")
    for p in existing:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)


class Trainer:
    """One run: ``Trainer(run_dir, cfg).fit(epochs)``; the config is a
    :class:`alignctl.config.Config` with model, data, train and grokked sections."""

    def __init__(self, run_dir: Path, cfg, device="auto") -> None:
        from .losses import get_loss
        from .models import build_model
        from .regularisers import build_regulariser
        from .tasks import load_data

        self.dir, self.cfg, t = Path(run_dir), cfg, cfg.train
        self.ckpt_dir = self.dir / "checkpoints"
        self.device = resolve_device(device)
        self.data = load_data(cfg.data, cfg.base_dir)
        torch.manual_seed(int(t["seed"]))  # the initialisation depends on the seed alone
        self.model = build_model(cfg.model, cfg.base_dir).to(self.device)
        frozen = tuple(t.get("freeze") or ())
        params = []
        for name, p in self.model.named_parameters():
            p.requires_grad_(not name.startswith(frozen) if frozen else True)
            if p.requires_grad:
                params.append(p)
        self.params = params
        self.opt = _optimizer(params, t["optimizer"])
        self.loss_fn = get_loss(t["loss"])
        self.regs = [build_regulariser(dict(r)) for r in t.get("regularisers") or []]
        for r in self.regs:
            if hasattr(r, "input_range"):  # attacks stay inside the data's valid range
                r.input_range = self.data.input_range
        self.gen = torch.Generator().manual_seed(int(t["seed"]))  # data order
        self.x = self.data.x_train.to(self.device)
        self.y = self.data.y_train.to(self.device)
        self._check_fit()
        self.step = self.epoch = self.batch_index = 0
        self.perm: torch.Tensor | None = None
        self.train_seconds = 0.0
        self.grokked_epoch: int | None = None
        self.last_eval: dict = {}

    def _check_fit(self) -> None:
        """The model must take the data and the loss its outputs: a one-line error now, not a
        traceback in the first step."""
        from .losses import accuracy

        xb, yb = self.x[:2], self.y[:2]
        try:
            with torch.no_grad():
                out = self.model(xb)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"the model cannot be applied to the data: {msg}") from None
        n_out = 1 if out.dim() == 1 else out.shape[-1]
        if n_out > 1 and (int(self.y.min()) < 0 or int(self.y.max()) >= n_out):
            raise InputError(f"labels range over {int(self.y.min())}..{int(self.y.max())}, "
                             f"but the model has {n_out} outputs")  # fmt: skip
        self.loss_fn(out, yb)  # InputError if the loss does not fit the outputs
        accuracy(out, yb)

    # -- one optimisation step ---------------------------------------------------------------
    def _forward(self, xb):
        """(differentiable input, output): token models are differentiated at the embedding."""
        if hasattr(self.model, "forward_embedded") and hasattr(self.model, "embed"):
            e = self.model.embed(xb)
            return e, self.model.forward_embedded(e)
        if any(_overrides(r, "penalty") for r in self.regs) and xb.is_floating_point():
            xb = xb.detach().requires_grad_(True)
        return xb, self.model(xb)

    def train_step(self, xb, yb) -> float:
        self.model.train()
        for r in self.regs:
            xb = r.transform_batch(self.model, xb, yb, self.loss_fn)
        inp, out = self._forward(xb)
        loss = self.loss_fn(out, yb)
        for r in self.regs:
            pen = r.penalty(self.model, inp, out, yb)
            if pen is not None:
                loss = loss + pen
        self.opt.zero_grad(set_to_none=True)
        loss.backward(inputs=self.params)  # not x.grad: the step's largest unused product
        for r in self.regs:
            r.after_backward(self.model)
        self.opt.step()
        self.step += 1
        return float(loss.detach())

    def _batches(self):
        n, bs = self.x.shape[0], self.cfg.train.get("batch_size") or self.x.shape[0]
        if self.perm is None:  # a new epoch: its order comes from the data generator
            self.perm = torch.randperm(n, generator=self.gen) if bs < n else torch.arange(n)
            self.batch_index = 0
        starts = list(range(0, n, bs))
        while self.batch_index < len(starts):
            idx = self.perm[starts[self.batch_index] : starts[self.batch_index] + bs]
            self.batch_index += 1
            yield idx.to(self.device)
        self.perm = None

    # -- checkpoints -----------------------------------------------------------------------
    def save(self) -> None:
        from .checkpoints import write_checkpoint

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
        from .checkpoints import CheckpointRef, load_weights, read_checkpoint

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

    # -- the loop --------------------------------------------------------------------------
    def _evaluate(self) -> dict:
        ev = evaluate(self.model, self.data, self.loss_fn, self.device)
        ev.update(epoch=self.epoch, step=self.step, train_seconds=round(self.train_seconds, 4))
        if self.grokked_epoch is None and is_grokked(ev, self.cfg.grokked):
            self.grokked_epoch = self.epoch
        ev["grokked"] = self.grokked_epoch is not None
        self.last_eval = ev
        with open(self.dir / "train_log.jsonl", "a") as fh:  # appended; truncated on resume
            fh.write(json.dumps(ev) + "\n")
        return ev

    def fit(self, epochs: int, *, eval_every=1, save_every=None, save_schedule=None,
            stop_when_grokked=False, callback: Callable[[dict], None] | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> dict:  # fmt: skip
        """Train up to ``epochs`` (the run's total); returns the run summary (run.json)."""
        saves = save_epochs(epochs, save_every, save_schedule)
        if self.step == 0 and self.batch_index == 0 and self.epoch == 0:
            self._evaluate()
            self.save()
        interrupted = False
        while self.epoch < epochs and not interrupted:
            if stop_when_grokked and self.grokked_epoch is not None:
                break
            for idx in self._batches():
                t0 = time.perf_counter()
                self.train_step(self.x[idx], self.y[idx])
                self.train_seconds += time.perf_counter() - t0
                if should_stop():
                    interrupted = True
                    break
            if interrupted and self.perm is not None:
                break  # mid-epoch: the checkpoint below records the position in the epoch
            self.epoch += 1
            last = self.epoch == epochs
            if self.epoch % max(1, int(eval_every)) == 0 or last or self.epoch in saves:
                ev = self._evaluate()
                if callback:
                    callback(ev)
            if self.epoch in saves or last or (stop_when_grokked and self.grokked_epoch):
                self.save()
        if interrupted:
            self.save()
        return self.write_summary(epochs, interrupted)

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


def _overrides(obj, method: str) -> bool:
    from .regularisers import Regulariser

    return getattr(type(obj), method) is not getattr(Regulariser, method)


def _optimizer(params, spec: dict) -> torch.optim.Optimizer:
    name = spec.get("name", "adamw").lower()
    if name == "adamw":
        return torch.optim.AdamW(
            params, lr=spec["lr"], weight_decay=spec.get("weight_decay", 0.0),
            betas=tuple(spec.get("betas", (0.9, 0.999))),
        )  # fmt: skip
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=spec["lr"], weight_decay=spec.get("weight_decay", 0.0),
            momentum=spec.get("momentum", 0.0),
        )  # fmt: skip
    raise InputError(f"unknown optimizer {name!r}; valid: adamw, sgd")
