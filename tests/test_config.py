"""Config files: defaults, round trips, every error path; presets against SETUPS.md."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from alignctl.config import Config, config_from_dict, load_config, save_config
from alignctl.errors import InputError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "alignctl.yaml"
    p.write_text(text)
    return p


def test_defaults_are_filled(tmp_path):
    cfg = load_config(write(tmp_path, "model: {arch: mlp, in_features: 2}\ndata: {task: digits}\n"))
    assert isinstance(cfg, Config) and cfg.base_dir == tmp_path.resolve()
    assert cfg.train["epochs"] == 1000 and cfg.train["batch_size"] is None
    assert cfg.train["loss"] == "cross_entropy" and cfg.train["regularisers"] == []
    assert cfg.train["optimizer"] == {
        "name": "adamw", "lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.999], "momentum": 0.0,
    }  # fmt: skip
    assert cfg.train["seed"] == 0 and cfg.train["eval_every"] == 1
    assert cfg.train["save_every"] is None and cfg.train["save_schedule"] is None
    assert cfg.train["freeze"] == []
    assert cfg.grokked == {"train_acc": None, "test_acc": None, "noise_acc": None}
    assert cfg.verdict == {}


def test_yaml_quirks_are_normalised(tmp_path):
    text = """
train:
  epochs: 1e4
  optimizer: {name: SGD, lr: 1e-2, weight_decay: 5e-4}
  regularisers: [grokalign, {name: grokfast, alpha: 0.8}]
  freeze: embed
grokked: {test_acc: 0.9}
"""
    cfg = load_config(write(tmp_path, text))
    assert cfg.train["epochs"] == 10000 and isinstance(cfg.train["epochs"], int)
    assert cfg.train["optimizer"]["name"] == "sgd" and cfg.train["optimizer"]["lr"] == 0.01
    assert cfg.train["optimizer"]["weight_decay"] == 5e-4
    assert cfg.train["regularisers"] == [{"name": "grokalign"}, {"name": "grokfast", "alpha": 0.8}]
    assert cfg.train["freeze"] == ["embed"] and cfg.grokked["test_acc"] == 0.9
    assert cfg.model is None and cfg.data is None


def test_round_trip_and_absolute_paths(tmp_path):
    text = "model: {factory: nets/m.py:make, kwargs: {w: 3}}\ndata: {path: d.npz}\n"
    cfg = load_config(write(tmp_path, text))
    d = cfg.to_dict()
    assert d["data"]["path"] == str((tmp_path / "d.npz").resolve())
    assert d["model"]["factory"] == f"{(tmp_path / 'nets' / 'm.py').resolve()}:make"
    assert cfg.data == {"path": "d.npz"}  # the config itself is unchanged
    out = tmp_path / "run" / "alignctl.yaml"
    out.parent.mkdir()
    save_config(cfg, out)
    again = load_config(out)
    assert again.to_dict() == d
    assert [p.name for p in out.parent.iterdir()] == ["alignctl.yaml"]  # no temp file left
    assert yaml.safe_load(out.read_text()) == d
    # modules named by package are not paths
    pkg = config_from_dict({"model": {"factory": "mypkg.nets:make"}}, tmp_path).to_dict()
    assert pkg["model"]["factory"] == "mypkg.nets:make"


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: {arch: mlp\n", r"line \d+: invalid YAML"),
        ("modle: {arch: mlp}\n", "unknown key.*modle; valid: model, data, train, grokked, verdict"),
        ("train: {epoch: 3}\n", "unknown key.*train: epoch; valid: epochs, batch_size"),
        ("train: {optimizer: {nam: sgd}}\n", "unknown key.*optimizer: nam; valid: name, lr"),
        ("grokked: {test_accuracy: 0.9}\n", "unknown key.*test_accuracy; valid: train_acc"),
        ("train: {epochs: many}\n", "train.epochs must be an integer"),
        ("train: {epochs: 2.5}\n", "train.epochs must be an integer"),
        ("train: {epochs: 0}\n", "train.epochs must be >= 1"),
        ("train: {batch_size: true}\n", "batch_size must be an integer or null"),
        ("train: {loss: hinge}\n", "unknown loss 'hinge'; valid: cross_entropy, mse"),
        ("train: {optimizer: {name: adam}}\n", "unknown optimizer 'adam'; valid: adamw, sgd"),
        ("train: {optimizer: {lr: -1}}\n", "lr must be > 0.0"),
        ("train: {optimizer: {betas: [0.9]}}\n", "betas must be a list of two"),
        ("train: {regularisers: [{lambda: 1}]}\n", r"regularisers\[0\] must be a mapping with"),
        ("train: {save_schedule: lin:5}\n", "expected log:K"),
        ("train: {freeze: [1]}\n", "freeze must be a list"),
        ("train: [1, 2]\n", "train must be a mapping"),
        ("grokked: {test_acc: 95}\n", r"fraction in \[0, 1\]"),
        ("model: {arch: mlp, factory: m.py:f}\n", "model needs exactly one of arch, factory"),
        ("data: {seed: 1}\n", "data needs exactly one of task, path, factory"),
        ("data: digits\n", "data must be a mapping"),
        ("- a\n- b\n", "top level must be a mapping"),
    ],
)
def test_config_errors(tmp_path, text, message):
    with pytest.raises(InputError, match=message) as info:
        load_config(write(tmp_path, text))
    assert "alignctl.yaml" in str(info.value) and "\n" not in str(info.value)


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(InputError, match=r"alignctl.yaml, line 3: invalid YAML: mapping values"):
        load_config(write(tmp_path, "train:\n  epochs: 3\n   seed: 1\n"))
    with pytest.raises(InputError, match=r"line 4: .*flow sequence started on line 3\)"):
        load_config(write(tmp_path, "train:\n  epochs: 3\n  seed: [1\n"))
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_empty_file_is_all_defaults(tmp_path):
    cfg = load_config(write(tmp_path, ""))
    assert cfg.train["epochs"] == 1000 and cfg.model is None
