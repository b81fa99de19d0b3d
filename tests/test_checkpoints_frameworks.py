"""Checkpoints written by the real frameworks: a Lightning Trainer (``model.`` beside a
class-weighted ``criterion``, ``hyper_parameters`` holding objects, ``last.ckpt``) and a Hugging
Face Trainer (``checkpoint-N`` folders with ``trainer_state.json``, optimizer, scheduler, RNG
and pickled ``TrainingArguments`` files). Both analysed without a line of their code running."""

from __future__ import annotations

import argparse
import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.runs.checkpoints import discover_checkpoints, load_weights, read_weights

MODEL = {"arch": "mlp", "in_features": 4, "hidden": [8], "out_features": 3}


def _net() -> torch.nn.Module:
    from alignctl.runs.models import build_model

    torch.manual_seed(0)
    return build_model(MODEL, Path("."))


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(12, 4, generator=g), torch.arange(12) % 3


def _run_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    x, y = _data()
    np.savez(root / "data.npz", x_train=x.numpy(), y_train=y.numpy())
    (root / "alignctl.yaml").write_text(
        yaml.safe_dump({"model": MODEL, "data": {"path": "data.npz"}})
    )
    return root


def _analyze(path: Path) -> dict:
    r = CliRunner().invoke(app, ["analyze", str(path), "--json", "-", "--metrics", "fast"])
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.filterwarnings("ignore")
def test_real_lightning_checkpoints(tmp_path):
    L = pytest.importorskip("lightning")
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    class Lit(L.LightningModule):
        def __init__(self, loss_fn=functools.partial(torch.nn.functional.cross_entropy),
                     args=argparse.Namespace(width=8), crit=torch.nn.MSELoss()):  # fmt: skip
            super().__init__()
            self.save_hyperparameters(logger=False)
            self.model = _net()
            self.criterion = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0]))

        def training_step(self, batch, i):
            x, y = batch
            return self.criterion(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    run = _run_dir(tmp_path / "run")
    ckpts = run / "checkpoints"
    every2 = ModelCheckpoint(dirpath=ckpts, every_n_train_steps=2, save_top_k=-1, save_last=True)
    trainer = L.Trainer(max_steps=4, logger=False, enable_progress_bar=False, callbacks=[every2],
                        enable_model_summary=False, accelerator="cpu",
                        default_root_dir=tmp_path)  # fmt: skip
    lit = Lit()
    trainer.fit(lit, DataLoader(TensorDataset(*_data()), batch_size=6))
    assert (ckpts / "last.ckpt").is_file()
    report = _analyze(run)
    assert [c["step"] for c in report["checkpoints"]] == [2, 4]
    notes = " | ".join(report["notes"])
    assert "left out last.ckpt: a copy of epoch=1-step=4.ckpt" in notes
    assert "ignored 1 other key(s) of criterion. (criterion.weight)" in notes
    for obj in ("functools.partial", "argparse.Namespace", "torch.nn.modules.loss.MSELoss"):
        assert obj in notes
    # The loaded weights are the trained ones.
    model = _net()
    ck = read_weights(discover_checkpoints(ckpts)[-1])
    load_weights(model, ck.state, "x")
    for k, v in lit.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


@pytest.mark.filterwarnings("ignore")
def test_real_hugging_face_trainer_folders(tmp_path):
    pytest.importorskip("transformers")
    from transformers import Trainer, TrainingArguments

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _net()

        def forward(self, x, labels=None):
            logits = self.net(x)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    x, y = _data()
    rows = [{"x": x[i], "labels": y[i]} for i in range(len(x))]
    out = tmp_path / "hf"
    args = TrainingArguments(output_dir=str(out), max_steps=4, save_steps=2,
                             per_device_train_batch_size=6, report_to=[], use_cpu=True,
                             logging_strategy="no", disable_tqdm=True, seed=0)  # fmt: skip
    model = Net()
    Trainer(model=model, args=args, train_dataset=rows).train()
    run = _run_dir(tmp_path / "run")
    shutil.copytree(out, run / "checkpoints")
    report = _analyze(run)
    assert [(c["name"], c["step"]) for c in report["checkpoints"]] == [
        ("checkpoint-2", 2),
        ("checkpoint-4", 4),
    ]
    # The same files dropped flat into one folder: the weights found, the rest skipped.
    flat = _run_dir(tmp_path / "flat") / "checkpoints"
    flat.mkdir()
    for f in (out / "checkpoint-4").iterdir():
        target = "weights.safetensors" if f.name == "model.safetensors" else f.name
        shutil.copy(f, flat / target)
    (ref,) = discover_checkpoints(flat, notes := [])
    assert ref.name == "weights"
    skipped = " ".join(notes)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        assert name in skipped
    assert "transformers.training_args.TrainingArguments" in skipped
    ck = read_weights(ref)
    fresh = _net()
    load_weights(fresh, ck.state, "x")
    for k, v in model.net.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)
