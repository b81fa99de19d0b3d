"""Lightning's ``StochasticWeightAveraging`` keeps its averaged model in the callback state of
each ``.ckpt`` (``callbacks['StochasticWeightAveraging']['average_model_state']``). Before:
the default analysed the raw weights without a word that averaged ones exist, and
``--weights ema`` was refused ("no EMA copy found"): no way to analyse them. After: a note by
default, the averaged weights with ``--weights ema`` (checked against ``alignctl.measure`` of
the averaged model), the raw ones with a note where SWA had not started, and a refusal for a
BatchNorm model, whose averaged copy keeps the running statistics of the start."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import alignctl
from alignctl.cli.assemble import app
from alignctl.runs.checkpoints.peek import number_in_name

L = pytest.importorskip("lightning")
MODEL = {"arch": "mlp", "in_features": 4, "hidden": [8], "out_features": 3}
X = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
Y = torch.arange(12) % 3


def _net(batch_norm: bool = False) -> torch.nn.Module:
    from alignctl.runs.models import build_model

    torch.manual_seed(0)
    net = build_model(MODEL, Path("."))
    return torch.nn.Sequential(torch.nn.BatchNorm1d(4), net) if batch_norm else net


def _train(run: Path, batch_norm: bool = False) -> list[dict]:
    """A real Lightning run with the real SWA callback (SWA from epoch 1 on), one .ckpt an
    epoch; returns the checkpoints as torch.load reads them (our own files)."""
    from lightning.pytorch.callbacks import ModelCheckpoint, StochasticWeightAveraging
    from torch.utils.data import DataLoader, TensorDataset

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = _net(batch_norm)

        def training_step(self, batch, i):
            return torch.nn.functional.cross_entropy(self.model(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    run.mkdir(parents=True)
    np.savez(run / "d.npz", x_train=X.numpy(), y_train=Y.numpy())
    cfg = {"model": {"factory": "net.py:make"}, "data": {"path": "d.npz"}}
    (run / "net.py").write_text(
        f"import torch\nfrom pathlib import Path\nfrom alignctl.runs.models import build_model\n"
        f"def make():\n    net = build_model({MODEL!r}, Path('.'))\n"
        f"    return torch.nn.Sequential(torch.nn.BatchNorm1d(4), net) if {batch_norm} else net\n"
    )
    (run / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    save = ModelCheckpoint(dirpath=run / "checkpoints", every_n_epochs=1, save_top_k=-1)
    swa = StochasticWeightAveraging(swa_lrs=0.1, swa_epoch_start=2)  # averages from epoch 1
    trainer = L.Trainer(max_epochs=4, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", default_root_dir=run,
                        callbacks=[save, swa])  # fmt: skip
    trainer.fit(Lit(), DataLoader(TensorDataset(X, Y), batch_size=6))
    files = sorted((run / "checkpoints").glob("*.ckpt"), key=lambda p: number_in_name(p.stem))
    return [torch.load(f, weights_only=False) for f in files]


def _model(state: dict, batch_norm: bool = False) -> torch.nn.Module:
    net = _net(batch_norm)
    net.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    return net.eval()


def _want(model: torch.nn.Module) -> dict:
    got = alignctl.measure(model, X, Y, metrics="fast", device="cpu")
    return {k: float(v.mean()) for k, v in got.items()}


def _analyze(run: Path, *args) -> tuple[int, dict | str]:
    r = CliRunner().invoke(app, ["analyze", str(run), "--json", "-", "--metrics", "fast",
                                 "--no-cache", "--device", "cpu", *args])  # fmt: skip
    return r.exit_code, json.loads(r.stdout) if r.exit_code == 0 else r.stderr


def _assert_measured(checkpoints: list[dict], models: list[torch.nn.Module]) -> None:
    assert len(checkpoints) == len(models)
    for ck, model in zip(checkpoints, models, strict=True):
        for name, value in _want(model).items():
            assert ck["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), ck["name"]


@pytest.mark.filterwarnings("ignore")
def test_swa_averaged_weights_are_noted_by_default_and_analysed_with_weights_ema(tmp_path):
    cks = _train(tmp_path / "run")
    swa = [ck["callbacks"]["StochasticWeightAveraging"] for ck in cks]
    assert [s["n_averaged"] for s in swa] == [0, 1, 2, 3]
    raw = [_model(ck["state_dict"]) for ck in cks]
    averaged = [_model(s["average_model_state"]) for s in swa]
    pairs = zip(raw[-1].parameters(), averaged[-1].parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)  # the test tells them apart

    code, report = _analyze(tmp_path / "run")
    assert code == 0
    _assert_measured(report["checkpoints"], raw)
    assert any("also hold SWA-averaged weights" in n and "--weights ema" in n
               for n in report["notes"]), report["notes"]  # fmt: skip

    code, report = _analyze(tmp_path / "run", "--weights", "ema")
    assert code == 0
    # epoch 0: SWA had not started (its copy is the untrained model): the raw weights, noted
    _assert_measured(report["checkpoints"], [raw[0], *averaged[1:]])
    notes = " | ".join(report["notes"])
    assert "analysed the SWA-averaged weights" in notes and "average_model_state" in notes
    assert "epoch=0-step=2.ckpt: Lightning StochasticWeightAveraging had averaged no" in notes

    # the Python API says the same (open_run's weights=)
    run = alignctl.open_run(tmp_path / "run", weights="ema")
    api = alignctl.analyze(run, metrics="fast", device="cpu")
    _assert_measured(api["checkpoints"], [raw[0], *averaged[1:]])


@pytest.mark.filterwarnings("ignore")
def test_swa_weights_of_a_batch_norm_model_are_refused_not_misread(tmp_path):
    """The callback averages parameters only: its copy's BatchNorm statistics are those of the
    start of training, so analysing it would give numbers of no model that ever ran."""
    cks = _train(tmp_path / "run", batch_norm=True)
    state = cks[-1]["callbacks"]["StochasticWeightAveraging"]["average_model_state"]
    assert torch.equal(state["model.0.running_mean"], torch.zeros(4))  # never updated
    code, err = _analyze(tmp_path / "run", "--weights", "ema")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "BatchNorm statistics" in err and "drop --weights ema" in err
    code, report = _analyze(tmp_path / "run")  # the raw weights stay analysable
    assert code == 0
    _assert_measured(report["checkpoints"], [_model(ck["state_dict"], True) for ck in cks])
