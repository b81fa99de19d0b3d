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
import warnings
from pathlib import Path

import torch

from alignctl._version import __version__
from alignctl.errors import InputError
from alignctl.geometry import arguments
from alignctl.integrations.probe import Every, Probe, as_step
from alignctl.report.monitor_log import LOG_NAME, to_line
from alignctl.runs.limits import as_path
from alignctl.runs.writer import WRITER_FILE, read_record, record_writer, release_writer

log = logging.getLogger("alignctl")
PROBE_FILE = "probe.npz"
OWN_FILES = (LOG_NAME, "run.json", "alignctl.yaml", PROBE_FILE, WRITER_FILE)


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
                self._check_model_config(model_config)
            try:
                self._prepare(overwrite)
                self._token = record_writer(self.out)
                if save_checkpoints:
                    self._write_run_config(model_config)
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
            self._save_weights(entry)
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

    def close(self, interrupted: bool = False) -> None:
        """Flush TensorBoard and write ``run.json`` (the run is finished)."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.close()
        if self.out is not None and not self._superseded():  # else: the folder is another's
            from alignctl.runs.atomic import atomic_write_text

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

    def _prepare(self, overwrite: bool) -> None:
        import shutil

        from alignctl.train.owned import refuse_replacing
        from alignctl.train.rundir import is_train_run

        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"out {self.out} is a file, not a folder")
        found = [self.out / f for f in OWN_FILES if (self.out / f).exists()]
        ckpts = self.out / "checkpoints"
        # the TensorBoard folder too: an old run's event files would show as this run's curves
        found += [d for d in (ckpts, self.out / "tensorboard") if d.is_dir()]
        if found and not overwrite:
            # any of them, not only a log: an `alignctl train` run's checkpoints, run.json and
            # alignctl.yaml would otherwise be deleted without being asked
            names = ", ".join(p.name for p in found)
            raise InputError(f"{self.out} already holds a run ({names}); pass overwrite=True")
        if overwrite and is_train_run(self.out):
            raise InputError(f"{self.out} holds an `alignctl train` run, not a monitor's: "
                             "choose another out")  # fmt: skip
        if found:  # a live writer's files and files alignctl did not write are never replaced
            refuse_replacing(self.out, "choose another out")
        for p in found:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        self.out.mkdir(parents=True, exist_ok=True)

    def _write_run_config(self, model_config: dict | None) -> None:
        import yaml

        from alignctl.runs.atomic import atomic_write, atomic_write_text
        from alignctl.runs.config import _absolute_paths, config_from_dict

        raw: dict = {}
        missing = []
        if model_config is not None:  # checked against the model before anything was written
            raw["model"] = _absolute_paths(model_config, Path.cwd())  # factory paths: cwd
        else:
            missing.append("the model (pass model_config={'arch': ...} or {'factory': "
                           "'file.py:fn'}, or analyze with --model)")  # fmt: skip
        if self.probe.y is not None:
            import numpy as np

            arrays = {"x_train": self.probe.x, "y_train": self.probe.y.reshape(-1)}
            if self.probe.test is not None:
                arrays.update(x_test=self.probe.test[0], y_test=self.probe.test[1].reshape(-1))
            arrays = {k: v.cpu().numpy() for k, v in arrays.items()}

            # .npz, not .safetensors: the data must not look like a checkpoint of the run
            def save(tmp):
                with open(tmp, "wb") as fh:  # a file object: np.savez would add ".npz"
                    np.savez(fh, **arrays)

            atomic_write(self.out / PROBE_FILE, save)
            raw["data"] = {"path": PROBE_FILE}
        else:
            missing.append("labelled data (pass probe_y, or analyze with --data FILE)")
        resolved = config_from_dict(raw, self.out, source="Monitor").to_dict()
        if "data" in resolved:  # the probe is in the folder: it moves (a CI artifact) with it
            resolved["data"]["path"] = PROBE_FILE
        text = yaml.safe_dump(resolved, sort_keys=False, default_flow_style=False)
        atomic_write_text(self.out / "alignctl.yaml", text)
        if missing:
            warnings.warn(
                f"Monitor: checkpoints go to {self.out / 'checkpoints'}, but `alignctl analyze "
                f"{self.out}` also needs " + " and ".join(missing),
                stacklevel=3,
            )

    def _check_model_config(self, spec: dict) -> None:
        """Build the section's model and load the monitored weights into it: the section must
        describe this model (keys and shapes), or analyze could not read the checkpoints."""
        from alignctl.runs.checkpoints import load_weights
        from alignctl.runs.models import build_model

        if not isinstance(spec, dict):
            raise InputError(f"model_config must be a config model section, not {spec!r}")
        fresh = build_model(spec, Path.cwd())
        try:
            load_weights(fresh, self.model.state_dict(), "the monitored model")
        except InputError as e:
            raise InputError(f"model_config does not describe the monitored model: {e}") from None

    def _save_weights(self, entry: dict) -> None:
        from alignctl.runs.checkpoints import write_checkpoint

        meta = {"step": entry["step"], "alignctl_version": __version__,
                "train_accuracy": entry["train_accuracy"]}  # fmt: skip
        path = self.out / "checkpoints" / f"{entry['name']}.safetensors"
        write_checkpoint(path, self.model.state_dict(), meta)
