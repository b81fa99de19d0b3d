"""A config's own schedule (``train.save_every``, ``train.save_schedule``, ``train.eval_every``,
documented in docs/config.md) is what ``alignctl train --config`` and ``Trainer.fit`` use unless
an option replaces it. Before, both ignored it: ``save_every: 20`` over 40 epochs gave 41
checkpoints (the default schedule) and ``eval_every: 10`` evaluated every epoch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from alignctl import Trainer
from alignctl.cli.assemble import app
from alignctl.runs.config import load_config


def _config(tmp_path: Path, **train) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    np.savez(tmp_path / "data.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    cfg = {"model": {"arch": "mlp", "in_features": 5, "hidden": [8], "out_features": 2},
           "data": {"path": "data.npz"}, "train": {"epochs": 12, **train}}  # fmt: skip
    (tmp_path / "my_run.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "my_run.yaml"


def _epochs(run: Path) -> tuple[list[int], list[int]]:
    """(epochs of the checkpoints, epochs of the evaluations)."""
    from safetensors import safe_open

    saved = []
    for f in sorted((run / "checkpoints").glob("step_*.safetensors")):
        with safe_open(str(f), "pt") as st:
            saved.append(int(json.loads(st.metadata()["epoch"])))
    lines = (run / "train_log.jsonl").read_text().splitlines()
    return saved, [json.loads(line)["epoch"] for line in lines]


def _train(args) -> None:
    r = CliRunner().invoke(app, ["train", *map(str, args), "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "train, options, saved, evaluated",
    [
        ({"save_every": 6, "eval_every": 4}, [], [0, 6, 12], [0, 4, 6, 8, 12]),
        ({"save_schedule": "log:3"}, [], [0, 1, 3, 12], None),
        # an option replaces the config's schedule (either schedule option replaces both)
        (
            {"save_every": 6, "eval_every": 4},
            ["--save-every", "4", "--eval-every", "3"],
            [0, 4, 8, 12],
            [0, 3, 4, 6, 8, 9, 12],
        ),  # fmt: skip
        ({"save_every": 6}, ["--save-schedule", "log:2"], [0, 1, 12], None),
        ({}, [], list(range(13)), list(range(13))),  # no schedule: about 20, every epoch here
    ],
)
def test_cli_train_keeps_the_configs_schedule(tmp_path, train, options, saved, evaluated):
    cfg = _config(tmp_path, **train)
    _train(["--config", cfg, "--out", tmp_path / "run", *options])
    got_saved, got_evaluated = _epochs(tmp_path / "run")
    assert got_saved == saved
    if evaluated is not None:
        assert got_evaluated == evaluated


def test_trainer_fit_and_resume_keep_the_configs_schedule(tmp_path):
    cfg = load_config(_config(tmp_path, save_every=5, eval_every=5))
    Trainer(tmp_path / "run", cfg, device="cpu").fit(10)
    assert _epochs(tmp_path / "run") == ([0, 5, 10], [0, 5, 10])
    _train(["--resume", tmp_path / "run", "--epochs", "15"])  # the run's own config
    assert _epochs(tmp_path / "run") == ([0, 5, 10, 15], [0, 5, 10, 15])
