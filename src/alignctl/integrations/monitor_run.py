"""The run folder a :class:`alignctl.Monitor` writes, in alignctl's run format, so that
``alignctl analyze OUT`` reads it afterwards: the folder made ready (an earlier monitor run
replaced only when asked, never an ``alignctl train`` run nor files alignctl did not write),
``alignctl.yaml`` naming the model and the probe as data (``probe.npz``), and the weights at
each measurement as ``checkpoints/<name>.safetensors`` with the step in their metadata."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from alignctl._version import __version__
from alignctl.errors import InputError, short
from alignctl.report.monitor_log import LOG_NAME
from alignctl.runs.atomic import atomic_write, atomic_write_text
from alignctl.runs.writer import WRITER_FILE

PROBE_FILE = "probe.npz"
OWN_FILES = (LOG_NAME, "run.json", "alignctl.yaml", PROBE_FILE, WRITER_FILE)


def prepare(out: Path, overwrite: bool) -> None:
    """Make ``out`` ready for a new monitor run. An earlier monitor's files (log, run.json,
    config, probe, checkpoints/, tensorboard/) are replaced only with ``overwrite``; InputError
    for a file in the way, an ``alignctl train`` run, or files a live writer or not alignctl
    wrote."""
    import shutil

    from alignctl.train.owned import refuse_replacing
    from alignctl.train.rundir import is_train_run

    if out.exists() and not out.is_dir():
        raise InputError(f"out {out} is a file, not a folder")
    found = [out / f for f in OWN_FILES if (out / f).exists()]
    # the TensorBoard folder too: an old run's event files would show as this run's curves
    found += [d for d in (out / "checkpoints", out / "tensorboard") if d.is_dir()]
    if found and not overwrite:
        # any of them, not only a log: an `alignctl train` run's checkpoints, run.json and
        # alignctl.yaml would otherwise be deleted without being asked
        names = ", ".join(p.name for p in found)
        raise InputError(f"{out} already holds a run ({names}); pass overwrite=True")
    if overwrite and is_train_run(out):
        raise InputError(f"{out} holds an `alignctl train` run, not a monitor's: "
                         "choose another out")  # fmt: skip
    if found:  # a live writer's files and files alignctl did not write are never replaced
        refuse_replacing(out, "choose another out")
    for p in found:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_run_config(out: Path, probe, model_config: dict | None) -> None:
    """``out/alignctl.yaml`` with the model section (factory paths made absolute from the
    working directory) and, with labels, the probe (and test split) as ``out/probe.npz``; a
    warning names what ``alignctl analyze out`` would still need."""
    import yaml

    from alignctl.runs.config import _absolute_paths, config_from_dict

    raw: dict = {}
    missing = []
    if model_config is not None:  # checked against the model before anything was written
        raw["model"] = _absolute_paths(model_config, Path.cwd())  # factory paths: cwd
    else:
        missing.append("the model (pass model_config={'arch': ...} or {'factory': "
                       "'file.py:fn'}, or analyze with --model)")  # fmt: skip
    if probe.y is not None:
        import numpy as np

        arrays = {"x_train": probe.x, "y_train": probe.y.reshape(-1)}
        if probe.test is not None:
            arrays.update(x_test=probe.test[0], y_test=probe.test[1].reshape(-1))
        arrays = {k: v.cpu().numpy() for k, v in arrays.items()}

        # .npz, not .safetensors: the data must not look like a checkpoint of the run
        def save(tmp):
            with open(tmp, "wb") as fh:  # a file object: np.savez would add ".npz"
                np.savez(fh, **arrays)

        atomic_write(out / PROBE_FILE, save)
        raw["data"] = {"path": PROBE_FILE}
    else:
        missing.append("labelled data (pass probe_y, or analyze with --data FILE)")
    resolved = config_from_dict(raw, out, source="Monitor").to_dict()
    # the defaults of `alignctl train` are not how the user's loop trained: a `train:` section
    # would read as its record (no weight decay: "add weight decay"; cross-entropy loss)
    resolved.pop("train", None)
    if not any(v is not None for v in resolved.get("grokked", {}).values()):
        resolved.pop("grokked", None)
    if "data" in resolved:  # the probe is in the folder: it moves (a CI artifact) with it
        resolved["data"]["path"] = PROBE_FILE
    text = yaml.safe_dump(resolved, sort_keys=False, default_flow_style=False)
    atomic_write_text(out / "alignctl.yaml", text)
    if missing:
        warnings.warn(
            f"Monitor: checkpoints go to {out / 'checkpoints'}, but `alignctl analyze "
            f"{out}` also needs " + " and ".join(missing),
            stacklevel=4,  # the user's Monitor(...): through __init__ and its keeps_rng wrapper
        )


def check_model_config(model: torch.nn.Module, spec) -> None:
    """Build the section's model and load the monitored weights into it: the section must
    describe this model (keys and shapes), or analyze could not read the checkpoints."""
    from alignctl.runs.checkpoints import load_weights
    from alignctl.runs.models import build_model

    if not isinstance(spec, dict):
        raise InputError(f"model_config must be a config model section, not {short(spec)}")
    fresh = build_model(spec, Path.cwd())
    try:
        load_weights(fresh, model.state_dict(), "the monitored model")
    except InputError as e:
        raise InputError(f"model_config does not describe the monitored model: {e}") from None


def save_weights(out: Path, model: torch.nn.Module, entry: dict) -> None:
    """The weights at a measurement, as ``out/checkpoints/<entry name>.safetensors``."""
    from alignctl.runs.checkpoints import write_checkpoint

    meta = {"step": entry["step"], "alignctl_version": __version__,
            "train_accuracy": entry["train_accuracy"]}  # fmt: skip
    path = out / "checkpoints" / f"{entry['name']}.safetensors"
    write_checkpoint(path, model.state_dict(), meta)
