"""Alignment metrics in a Lightning ``Trainer`` (the ``lightning`` extra).

    from alignctl.integrations.lightning import AlignmentCallback
    trainer = lightning.Trainer(callbacks=[AlignmentCallback(probe_x, probe_y, every_n_steps=100)])

At the start of training and each time ``trainer.global_step`` reaches a multiple of
``every_n_steps`` (or jumps past one: manual optimization counts every optimizer's step)
the LightningModule is measured on the probe set (:class:`alignctl.integrations.probe.Probe`:
eval mode, RNG states restored, training unchanged) on the global-zero process only, and the
means go to every logger of the module (``pl_module.loggers``: TensorBoard, CSV, W&B,
MLflow, ...) as ``alignment/centroid_alignment`` etc. at that step; they are also put in
``trainer.callback_metrics``, so ``EarlyStopping`` or ``ModelCheckpoint`` can watch them.
With ``stop_when="stop"`` a ``stop`` recommendation sets ``trainer.should_stop`` (the decision
is broadcast from global zero, so every process stops) and the reason is logged. The series
is saved in Lightning checkpoints (the callback's ``state_dict``): ``fit(ckpt_path=...)``
continues it, without measuring and logging the checkpoint's own step a second time.
"""

from __future__ import annotations

import logging

import torch

try:
    import lightning as L
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "alignctl.integrations.lightning needs Lightning: pip install 'alignctl[lightning]'"
    ) from e

from alignctl.errors import InputError
from alignctl.integrations import series
from alignctl.integrations.loop import Every, keeps_rng
from alignctl.integrations.probe import Probe

log = logging.getLogger("alignctl")


class AlignmentCallback(L.Callback):
    """Log alignment metrics of the LightningModule on a fixed probe set.

    Args:
        probe_x, probe_y: the probe set (labels give ``alignment/probe_accuracy`` and the
            verdicts that ``stop_when`` needs).
        every_n_steps: measure when ``trainer.global_step`` is a multiple of it.
        metrics: ``fast`` (centroid metrics), ``standard``, ``full`` or names.
        stop_when: None, or ``"stop"`` to stop when the recommendation is ``stop``.
    """

    def __init__(self, probe_x, probe_y=None, every_n_steps: int = 100, metrics="fast",
                 stop_when: str | None = None, **probe_options) -> None:  # fmt: skip
        self._every = Every(every_n_steps, "every_n_steps")
        self.every = self._every.every
        self.probe = Probe(probe_x, probe_y, metrics=metrics, stop_when=stop_when, **probe_options)
        self.stop_reason: str | None = None
        self._restored: list[dict] | None = None
        self._digest = series.probe_digest(self.probe)

    @property
    def state_key(self) -> str:  # two callbacks (other probes or periods) keep their own state
        return self._generate_state_key(every_n_steps=self.every, probe=self._digest)

    def state_dict(self) -> dict:
        """The series so far (JSON text: a checkpoint loads with ``weights_only``), saved in
        Lightning checkpoints: a training resumed from one (``fit(ckpt_path=...)``) judges
        the whole series and does not measure and log the checkpoint's own step again."""
        return series.saved(self.probe.entries, self._digest)

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = series.restored(state_dict, self._digest)  # None: measured afresh

    def on_train_start(self, trainer, pl_module) -> None:
        if type(pl_module).forward is L.LightningModule.forward:
            raise InputError(f"{type(pl_module).__name__} defines no forward(): the callback "
                             "measures pl_module(x); define forward(x) -> logits")  # fmt: skip
        # a new training (the callback reused), or a resume: measurements at its first step
        # or later are another run's
        step, restored, self._restored = int(trainer.global_step), self._restored, None
        if restored is not None:
            self.probe.entries = restored
        # resumed from a checkpoint holding the measurement at its own step (the same weights):
        # kept, not measured and logged a second time
        kept = restored is not None and any(e["step"] == step for e in restored)
        self._every.last, self.stop_reason = self.probe.rewind(step + 1 if kept else step), None
        if kept and trainer.is_global_zero:
            for k, v in self.probe.scalars(self.probe.entries[-1]).items():
                trainer.callback_metrics[k] = torch.tensor(v)
        self._maybe_measure(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._maybe_measure(trainer, pl_module)

    def _maybe_measure(self, trainer, pl_module) -> None:
        step = int(trainer.global_step)
        if not self._every.due(step):  # accumulation: several batches share a global step
            return  # every batch: nothing else here (no RNG saved and restored)
        self._measure(trainer, pl_module, step)

    @keeps_rng  # the loggers and report_to integrations it feeds too
    def _measure(self, trainer, pl_module, step: int) -> None:
        self._every.last = step
        stop = False
        if trainer.is_global_zero:
            entry = self.probe.measure(pl_module, step)
            scalars = self.probe.scalars(entry)
            for logger in pl_module.loggers:
                logger.log_metrics(scalars, step=step)
            for k, v in scalars.items():
                trainer.callback_metrics[k] = torch.tensor(v)
            stop = self.probe.should_stop
        if self.probe.stop_when is not None:
            stop = bool(trainer.strategy.broadcast(stop, src=0))
            if stop and not trainer.should_stop:
                self.stop_reason = self.probe.stop_reason or "alignctl: stop (from global zero)"
                if trainer.is_global_zero:
                    log.warning(self.stop_reason)
                trainer.should_stop = True
