"""Pickled checkpoints: objects beside the tensors are recovered as inert placeholders, never
imported, called or given state; payloads run nothing, whatever path loads them; a whole
pickled module is refused with the way to re-save it (issue 11)."""

from __future__ import annotations

import argparse
import functools
import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.runs.checkpoints import (
    CheckpointRef,
    discover_checkpoints,
    load_weights,
    read_weights,
)

MODEL = {"arch": "mlp", "in_features": 4, "hidden": [8], "out_features": 3}


def _net() -> torch.nn.Module:
    from alignctl.runs.models import build_model

    torch.manual_seed(0)
    return build_model(MODEL, Path("."))


def _read(path: Path):
    return read_weights(CheckpointRef(path, path.stem, None))


class Marker:
    """Any code of this class that runs creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state) -> None:
        Path(state["marker"]).write_text("setstate ran")


class CallsOnLoad:
    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _lightning_ckpt(hparams: dict, step: int = 7) -> dict:
    sd = {f"model.{k}": v for k, v in _net().state_dict().items()}
    return {
        "state_dict": sd,
        "hyper_parameters": hparams,
        "global_step": step,
        "epoch": 1,
        "pytorch-lightning_version": "2.6.0",
    }


HPARAMS = {
    "partial": functools.partial(torch.nn.functional.cross_entropy, label_smoothing=0.1),
    "MSELoss": torch.nn.MSELoss(),
    "Namespace": argparse.Namespace(lr=0.1, depth=3),
    "a class of the test": Marker("never-written"),
}


@pytest.mark.parametrize("kind", sorted(HPARAMS))
def test_hyper_parameter_objects_are_inert_and_the_tensors_load(tmp_path, kind):
    path = tmp_path / "epoch=1-step=7.ckpt"
    torch.save(_lightning_ckpt({"loss": HPARAMS[kind], "lr": 0.1}), path)
    with pytest.raises(Exception, match="(?i)weights.only"):  # torch's default still refuses
        torch.load(path, weights_only=True)
    ck = _read(path)
    model = _net()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    load_weights(model, ck.state, path.name)
    for k, v in _net().state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    assert ck.meta["global_step"] == 7
    (note,) = [n for n in ck.notes if "inert placeholders" in n]
    assert "hyper_parameters['loss']" in note
    assert not (tmp_path / "never-written").exists()
    (ref,) = discover_checkpoints(tmp_path)
    assert ref.step == 7


def test_placeholder_note_names_each_object_and_place(tmp_path):
    path = tmp_path / "hp.ckpt"
    hp = {"loss": HPARAMS["partial"], "crit": torch.nn.MSELoss(), "args": HPARAMS["Namespace"]}
    torch.save(_lightning_ckpt(hp), path)
    (note,) = _read(path).notes
    for where, what in [
        ("hyper_parameters['loss']", "functools.partial"),
        ("hyper_parameters['crit']", "torch.nn.modules.loss.MSELoss"),
        ("hyper_parameters['args']", "argparse.Namespace"),
    ]:
        assert f"{what} at {where}" in note


PAYLOADS = {
    "os.system": lambda m: CallsOnLoad(__import__("os").system, f"touch {m}"),
    "eval": lambda m: CallsOnLoad(eval, f"open({str(m)!r}, 'w')"),
    "exec": lambda m: CallsOnLoad(exec, f"open({str(m)!r}, 'w')"),
    "subprocess": lambda m: CallsOnLoad(subprocess.call, ["touch", str(m)]),
    "open": lambda m: CallsOnLoad(open, str(m), "w"),
    "setstate": lambda m: Marker(str(m)),
}


@pytest.mark.parametrize("where", ["hyper_parameters", "state_dict", "top"])
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_payloads_run_nothing_on_any_path(tmp_path, monkeypatch, payload, where):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    evil = PAYLOADS[payload](marker)
    if where == "top":
        obj = evil
    else:
        obj = _lightning_ckpt({"x": 1})
        obj[where]["x" if where == "hyper_parameters" else "model.evil"] = evil
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "alignctl.yaml").write_text(
        "model: {arch: mlp, in_features: 4, hidden: [8], out_features: 3}\ndata: {path: data.npz}\n"
    )
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 4, generator=g), torch.arange(12) % 3
    np.savez(run / "data.npz", x_train=x.numpy(), y_train=y.numpy())
    path = run / "checkpoints" / "step_5.ckpt"
    torch.save(obj, path)
    assert not marker.exists()
    for attempt in (
        lambda: discover_checkpoints(run / "checkpoints"),
        lambda: _read(path),
        lambda: CliRunner().invoke(app, ["analyze", str(run), "--quiet"]),
    ):
        try:
            attempt()
        except InputError as e:
            assert "\n" not in str(e)
        assert not marker.exists(), "pickled code ran"
    r = CliRunner().invoke(app, ["analyze", str(path), "--metrics", "fast"])
    assert not marker.exists()
    if where != "hyper_parameters" or payload == "os.system":
        assert r.exit_code == 2 and r.stderr.startswith("error: ")
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    else:  # recovered: analysed, the placeholders named in a note
        assert r.exit_code == 0, r.stderr
        assert "note: objects torch does not load by default" in r.stderr


def test_whole_pickled_module_is_refused_and_its_class_never_imported(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    marker = tmp_path / "imported"
    (pkg / "usernet.py").write_text(
        "import pathlib, torch\n"
        f"pathlib.Path({str(marker)!r}).write_text('imported')\n"
        "class UserNet(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(4, 3)\n"
    )
    monkeypatch.syspath_prepend(str(pkg))
    net = importlib.import_module("usernet").UserNet()
    for name, obj in [("whole.pt", net), ("wrapped.pt", {"model": net, "epoch": 2})]:
        torch.save(obj, tmp_path / name)
    del sys.modules["usernet"]
    marker.unlink()
    for name in ("whole.pt", "wrapped.pt"):
        with pytest.raises(InputError) as info:
            _read(tmp_path / name)
        msg = str(info.value)
        assert "pickled module of class usernet.UserNet" in msg
        assert "torch.save(model.state_dict(), path)" in msg and "\n" not in msg
        r = CliRunner().invoke(app, ["analyze", str(tmp_path / name), "--model", "mlp"])
        assert r.exit_code == 2 and "pickled module of class usernet.UserNet" in r.stderr
    assert not marker.exists() and "usernet" not in sys.modules


def test_torch_module_pickled_whole_names_its_class(tmp_path):
    torch.save(_net(), tmp_path / "m.pt")
    with pytest.raises(InputError, match=r"pickled module of class torch\.nn\.modules\."):
        discover_checkpoints(tmp_path)
