"""Held-out checks of training (qa_train): settings a run accepts but would silently not apply.

- ``--reg adversarial`` on a model that reads integer tokens (the built-in transformer, a
  factory model with an ``nn.Embedding``, the token protocol) passed every batch through
  unchanged: the run trained plain and said it was adversarially trained;
- an optimiser setting of the other optimiser (``momentum`` with AdamW, ``betas`` with SGD)
  was accepted and ignored without a word.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from alignctl import Trainer
from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.runs.config import config_from_dict
from alignctl.train.step import ignored_optimizer_settings

NETS = """
import torch
from torch import nn


class Bag(nn.Module):  # an nn.Embedding reads the tokens: found by alignctl's probe
    def __init__(self):
        super().__init__()
        self.e, self.o = nn.Embedding(7, 4), nn.Linear(12, 3)

    def forward(self, t):
        return self.o(self.e(t).flatten(1))


class Protocol(Bag):  # the token protocol: embed / forward_embedded
    def embed(self, t):
        return self.e(t)

    def forward_embedded(self, e):
        return self.o(e.flatten(1))

    def forward(self, t):
        return self.forward_embedded(self.embed(t))


def bag():
    return Bag()


def protocol():
    return Protocol()


def mlp():
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3))
"""


def _folder(tmp_path, tokens: bool):
    (tmp_path / "nets.py").write_text(NETS)
    r = np.random.default_rng(0)
    if tokens:
        x, xt = r.integers(0, 7, (10, 3)), r.integers(0, 7, (6, 3))
    else:
        x, xt = r.normal(size=(10, 3)).astype("float32"), r.normal(size=(6, 3)).astype("float32")
    np.savez(tmp_path / "d.npz", x_train=x, y_train=r.integers(0, 3, 10), x_test=xt,
             y_test=r.integers(0, 3, 6))  # fmt: skip


def _cfg(tmp_path, factory: str, regs=(), optimizer=None):
    train = {"epochs": 1, "regularisers": list(regs)}
    if optimizer is not None:
        train["optimizer"] = optimizer
    d = {"model": {"factory": f"nets.py:{factory}"}, "data": {"path": "d.npz"}, "train": train}
    return d


@pytest.mark.parametrize("factory", ["bag", "protocol"])
def test_adversarial_training_of_a_token_model_is_an_input_error(tmp_path, factory):
    _folder(tmp_path, tokens=True)
    cfg = config_from_dict(_cfg(tmp_path, factory, [{"name": "adversarial"}]), tmp_path)
    with pytest.raises(InputError, match="adversarial.*tokens"):
        Trainer(tmp_path / "run", cfg, "cpu")
    # the other regularisers act on token models (at the embedding, or on the gradients)
    for reg in ("grokalign", "grokfast", "orthograd"):
        Trainer(tmp_path / "run", config_from_dict(_cfg(tmp_path, factory, [reg]), tmp_path), "cpu")


def test_adversarial_on_the_transformer_preset_is_one_line_exit_2_nothing_written(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--task", "modadd-transformer", "--reg", "adversarial",
                                 "--out", str(out), "--epochs", "1"])  # fmt: skip
    assert r.exit_code == 2, r.output
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: regulariser adversarial")
    assert not out.exists()


def test_adversarial_on_float_inputs_still_trains(tmp_path):
    _folder(tmp_path, tokens=False)
    cfg = config_from_dict(_cfg(tmp_path, "mlp", [{"name": "adversarial"}]), tmp_path)
    assert Trainer(tmp_path / "run", cfg, "cpu").fit(1)["epochs_done"] == 1


@pytest.mark.parametrize(
    "optimizer, ignored",
    [
        ({"name": "adamw", "lr": 0.1, "momentum": 0.9}, "momentum"),
        ({"name": "sgd", "lr": 0.1, "betas": [0.5, 0.5]}, "betas"),
        ({"name": "adamw", "lr": 0.1, "betas": [0.5, 0.5]}, None),
        ({"name": "sgd", "lr": 0.1, "momentum": 0.9}, None),
        ({"name": "sgd", "lr": 0.1, "betas": [0.9, 0.999]}, None),  # a resolved config's
        ("sgd", None),
    ],
)
def test_a_setting_of_the_other_optimiser_is_a_note(tmp_path, optimizer, ignored):
    _folder(tmp_path, tokens=False)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(_cfg(tmp_path, "mlp", optimizer=optimizer)))
    r = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.yaml"),
                                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert r.exit_code == 0, r.output
    notes = [x for x in r.stderr.splitlines() if "not a setting of" in x]
    if ignored is None:
        assert notes == []
    else:
        assert len(notes) == 1 and f"train.optimizer.{ignored}" in notes[0]
        # the saved, resolved config (every key listed) reads back with the same note only
        saved = yaml.safe_load((tmp_path / "run" / "alignctl.yaml").read_text())
        assert len(ignored_optimizer_settings(saved["train"]["optimizer"])) == 1


# -- a grokked criterion that can never hold --------------------------------------------------
@pytest.mark.parametrize(
    "grokked, test_split, fragment",
    [
        ({"test_acc": 0.5}, False, "test split"),
        ({"train_acc": 0.5, "test_acc": 0.5}, False, "test split"),
        ({"noise_acc": 0.5}, True, "noise"),
        ({"train_acc": 1.0}, True, "exceed"),
        ({"test_acc": 1}, True, "exceed"),
    ],
)
def test_a_grokked_criterion_that_can_never_hold_is_one_line_exit_2(
    tmp_path, grokked, test_split, fragment
):
    """It was accepted: the run trained, never grokked whatever it learned (accuracies must
    exceed the thresholds; no test split or no input noise measures nothing), and a race
    counted every pair as censored at --max-epochs."""
    _folder(tmp_path, tokens=False)
    if not test_split:
        r = np.random.default_rng(1)
        np.savez(tmp_path / "d.npz", x_train=r.normal(size=(10, 3)).astype("float32"),
                 y_train=r.integers(0, 3, 10))  # fmt: skip
    d = {**_cfg(tmp_path, "mlp"), "grokked": grokked}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(d))
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(out)])
    assert r.exit_code == 2, r.output
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: grokked:") and fragment in lines[0]
    assert not out.exists()


def test_a_criterion_that_can_hold_trains(tmp_path):
    _folder(tmp_path, tokens=False)
    d = {**_cfg(tmp_path, "mlp"), "grokked": {"train_acc": 0.999, "test_acc": 0.0}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(d))
    r = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--out",
                                 str(tmp_path / "run"), "-q"])  # fmt: skip
    assert r.exit_code == 0, r.output


def test_a_race_on_a_config_without_a_grokked_criterion_is_refused(tmp_path):
    """Every pair trained to --max-epochs (the default: the config's 1000 epochs, 25 seeds x 4
    settings) and the table said nothing grokked."""
    _folder(tmp_path, tokens=False)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(_cfg(tmp_path, "mlp")))
    out = tmp_path / "race"
    r = CliRunner().invoke(app, ["race", "--config", str(tmp_path / "c.yaml"), "--regs",
                                 "none,grokalign", "--seeds", "2", "--out", str(out)])  # fmt: skip
    assert r.exit_code == 2, r.output
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "no grokked criterion" in lines[0]
    assert not out.exists()


def test_stop_when_grokked_without_a_criterion_is_one_line_exit_2_nothing_written(tmp_path):
    """`train --stop-when-grokked` on a config with no grokked criterion trained every epoch:
    the flag could never fire."""
    _folder(tmp_path, tokens=False)
    d = _cfg(tmp_path, "mlp")
    d["train"]["epochs"] = 3
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(d))
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(out),
                                 "--stop-when-grokked"])  # fmt: skip
    assert r.exit_code == 2, r.output
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "needs a grokked criterion" in lines[0], lines
    assert not out.exists()


def test_a_batch_size_over_the_data_is_a_note(tmp_path):
    """batch_size 64 on 10 samples silently trained full batch."""
    _folder(tmp_path, tokens=False)
    d = _cfg(tmp_path, "mlp")
    d["train"]["batch_size"] = 64
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(d))
    r = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--out",
                                 str(tmp_path / "run")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "note: batch_size 64 is more than the 10 training samples" in r.stderr
