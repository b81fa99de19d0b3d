"""``alignctl.Monitor``: alignment metrics inside a plain PyTorch training loop (paper section
4.3: centroid alignment is cheap enough to watch during training, against under- and
over-training).

    mon = alignctl.Monitor(model, probe_x, probe_y, every=100, out="runs/x")
    for step, (x, y) in enumerate(loader):
        ...  # forward, backward, optimizer.step()
        if mon.step(step):  # True only with stop_when="stop" and a `stop` recommendation
            break
    mon.close()  # or use the monitor as a context manager

Every ``every`` steps (and at step 0) the model is measured on the fixed probe set in eval
mode (:class:`alignctl.integrations.probe.Probe`: modes and RNG states restored, so training
is bit for bit unchanged) and one strict-JSON line is appended to ``OUT/alignment.jsonl``
(:mod:`alignctl.report.monitor_log`); ``alignctl analyze OUT`` renders it as the usual table.
``tensorboard=True`` also writes the scalars ``alignment/<metric>`` to ``OUT/tensorboard``
(``torch.utils.tensorboard``). ``save_checkpoints=True`` saves the weights at every
measurement as ``OUT/checkpoints/step_XXXXXXXX.safetensors`` (step in the metadata) with an
``OUT/alignctl.yaml`` naming the model (``model_config``: a built-in ``{"arch": ...}`` or a
``{"factory": "file.py:fn"}`` section) and the probe as data, so ``alignctl analyze OUT``
analyses the checkpoints afterwards; what it would lack is said in a warning. ``close()``
writes ``OUT/run.json`` (``finished: true``), which ends ``alignctl analyze --follow OUT``.
The monitor also records its process in ``OUT/.alignctl-writer.json``
(:mod:`alignctl.runs.writer`), so a follow knows when that process died without closing
(killed, crashed); a second monitor on the same folder (a notebook cell run again) takes the
folder over, and the first then neither writes there nor ends the second's run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from alignctl._version import __version__
from alignctl.errors import InputError
from alignctl.geometry import arguments
from alignctl.integrations.loop import Every, as_step, keeps_rng
from alignctl.integrations.monitor_run import (
    check_model_config,
    prepare,
    save_weights,
    write_run_config,
)
from alignctl.integrations.probe import Probe
from alignctl.report.monitor_log import LOG_NAME, to_line
from alignctl.runs.atomic import atomic_write_text
from alignctl.runs.limits import as_path
from alignctl.runs.writer import read_record, record_writer, release_writer

log = logging.getLogger("alignctl")


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise InputError("tensorboard=True needs TensorBoard: pip install "
                         "'alignctl[tensorboard]'") from None  # fmt: skip
    return SummaryWriter


class Monitor:
    """Measure ``model`` on ``probe_x`` (labels ``probe_y``) every ``every`` steps.

    Args beyond :class:`Probe`'s (``metrics``, ``test``, ``stop_when``, ``batch_size``,
    ``verdict``):
        out: run folder (None: keep the measurements in memory only, ``mon.entries``).
        tensorboard: also write TensorBoard scalars to ``out/tensorboard``.
        save_checkpoints: also save the weights at each measurement (alignctl's run format).
        model_config: the config ``model:`` section that rebuilds ``model``, for analyze.
        overwrite: replace the monitor files of an earlier run in ``out`` (else InputError).

    Raises InputError for a bad probe, metric set, ``stop_when`` or ``model_config``, a switch
    that is not a bool, or an ``out`` that already holds a monitor log."""

    @keeps_rng
    def __init__(self, model: torch.nn.Module, probe_x, probe_y=None, *, every: int = 100,
                 metrics="fast", out: str | Path | None = "runs/x", tensorboard: bool = False,
                 save_checkpoints: bool = False, stop_when: str | None = None, test=None,
                 model_config: dict | None = None, batch_size: int | None = None,
                 verdict: dict | None = None, overwrite: bool = False) -> None:  # fmt: skip
        arguments.model(model)  # an nn.Module, not meta, not complex; switches are bools:
        switches = {"tensorboard": tensorboard, "save_checkpoints": save_checkpoints}
        tensorboard, save_checkpoints, overwrite = arguments.flags(**switches, overwrite=overwrite)
        self.model, self._every = model, Every(every)
        self.probe = Probe(probe_x, probe_y, metrics=metrics, test=test, stop_when=stop_when,
                           batch_size=batch_size, verdict=verdict)  # fmt: skip
        self.out = None if out is None else as_path(out, "out")
        if self.out is None and (tensorboard or save_checkpoints):
            raise InputError("tensorboard and save_checkpoints need an out folder")
        self._writer, self._token = None, None
        self._closed = self._stop_logged = False
        if self.out is not None:
            # everything that can fail is checked before an earlier run is replaced
            writer_class = _summary_writer() if tensorboard else None
            if save_checkpoints and model_config is not None:
                check_model_config(self.model, model_config)
            try:
                prepare(self.out, overwrite)
                self._token = record_writer(self.out)
                if save_checkpoints:
                    write_run_config(self.out, self.probe, model_config)
                if writer_class is not None:
                    self._writer = writer_class(log_dir=str(self.out / "tensorboard"))
            except BaseException as e:  # no record of a writer that never started
                release_writer(self.out, self._token)
                if isinstance(e, OSError):  # a file in the way, no permission, a full disk
                    raise InputError(f"cannot write the monitor's run in {self.out}: "
                                     f"{e.strerror or e}") from None  # fmt: skip
                raise
        self.save_checkpoints = save_checkpoints

    # -- the loop's side -------------------------------------------------------------------
    def step(self, step: int) -> bool:
        """Measure when ``step`` reaches a multiple of ``every`` (step 0 included; a step that
        jumps past one measures too; a step seen again does not); returns
        :attr:`should_stop`. Steps are integers that never go back (InputError)."""
        step = self._check(step)
        if self._every.due(step):
            self.measure(step)
        return self.should_stop

    @keeps_rng
    def measure(self, step: int) -> dict:
        """Measure now, whatever ``every`` says; returns the log entry (with its verdict).
        ``step`` must be later than the last one measured (InputError)."""
        step = self._check(step)
        if step == self._last:
            raise InputError(f"step {step} is measured already")
        if self._closed:
            raise InputError("the monitor is closed")
        if self._superseded():
            raise InputError(f"{self.out} is now written by a Monitor created after this one; "
                             "this one can no longer write there")  # fmt: skip
        entry = self.probe.measure(self.model, step)
        self._every.last = step
        if self.out is not None:
            with open(self.out / LOG_NAME, "a", encoding="utf-8") as fh:
                fh.write(to_line(entry))  # one write per line: readers never see half a line
        if self._writer is not None:
            for k, v in self.probe.scalars(entry).items():
                self._writer.add_scalar(k, v, step)
            self._writer.flush()
        if self.save_checkpoints:
            save_weights(self.out, self.model, entry)
        if self.probe.stop_reason and not self._stop_logged:
            log.warning(self.probe.stop_reason)  # the reason, once, through `logging`
            self._stop_logged = True
        return entry

    def _check(self, step) -> int:
        step = as_step(step)
        if self._last is not None and step < self._last:
            raise InputError(
                f"step {step} after step {self._last}: steps must not go back (pass the global "
                "step, not the batch index within an epoch)"
            )
        return step

    @property
    def every(self) -> int:
        return self._every.every

    @property
    def _last(self) -> int | None:
        return self._every.last

    @property
    def entries(self) -> list[dict]:
        return self.probe.entries

    @property
    def should_stop(self) -> bool:
        """True once the recommendation was ``stop`` (only with ``stop_when="stop"``)."""
        return self.probe.should_stop

    @property
    def stop_reason(self) -> str | None:
        return self.probe.stop_reason

    def recommendation(self) -> dict:
        return self.probe.recommendation()

    @keeps_rng
    def close(self, interrupted: bool = False) -> None:
        """Flush TensorBoard and write ``run.json`` (the run is finished)."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.close()
        if self.out is not None and not self._superseded():  # else: the folder is another's
            summary = {
                "alignctl_version": __version__, "finished": True, "interrupted": interrupted,
                "steps": self._last, "measurements": len(self.entries),
                "stopped": self.stop_reason,
            }  # fmt: skip
            atomic_write_text(self.out / "run.json", json.dumps(summary, indent=2) + "\n")
            release_writer(self.out, self._token)  # closed: no process writes this run now

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(interrupted=exc_type is not None)

    # -- files -----------------------------------------------------------------------------
    def _superseded(self) -> bool:
        """Another monitor took the folder over (its record replaced this one's)."""
        if self._token is None:
            return False
        rec = read_record(self.out)
        return rec is not None and rec.get("token") != self._token
