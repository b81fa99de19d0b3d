"""``--reg`` over a config that already trains with that regulariser, and ``race --config``
over a config with regularisers: one ``error:`` line, exit 2, nothing written (the penalty was
added twice, GrokAlign at lambda 0.1 plus 0.01, and a race's ``none`` carried the config's)."""

import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.train.build import build_config

sys.path.insert(0, str(Path(__file__).parent))
from test_outputs import one_error  # noqa: E402

BASE = {
    "model": {"arch": "mlp", "in_features": 10, "hidden": [8], "out_features": 2},
    "data": {"task": "sparse-parity", "n": 64, "n_bits": 10, "k": 3},
    "train": {"epochs": 1},
    "grokked": {"test_acc": 0.9},  # a race times grokking: a config without a criterion is refused
}


def _config(tmp_path, regularisers) -> Path:
    d = {**BASE, "train": {**BASE["train"], "regularisers": regularisers}}
    path = tmp_path / "my_run.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.mark.parametrize(
    ("configured", "reg"),
    [
        ([{"name": "grokalign", "lambda": 0.1}], "grokalign:lambda=0.01,n_proj=2"),
        (["grokalign:subsample=0.5"], "grokalign"),  # a spec string in the config
        ([{"name": "grokfast"}, {"name": "orthograd"}], "orthograd"),
        ([{"name": "adversarial", "eps": 0.1}], "adversarial:steps=2"),
    ],
)
def test_train_reg_restating_a_configured_regulariser_is_refused(tmp_path, configured, reg):
    config = _config(tmp_path, configured)
    out = tmp_path / "out"
    argv = ["train", "--config", str(config), "--reg", reg, "--out", str(out), "-q"]
    name = reg.partition(":")[0]
    line = one_error(CliRunner().invoke(app, argv))
    assert f"--reg {name}: {config} already trains with {name}" in line
    assert not out.exists()


def test_train_reg_adding_another_regulariser_composes(tmp_path):
    config = _config(tmp_path, [{"name": "grokfast"}])
    names = [
        s["name"] for s in build_config(config, None, ["grokalign"], 0, 1).train["regularisers"]
    ]
    assert names == ["grokfast", "grokalign"]


@pytest.mark.parametrize("configured", [[{"name": "grokalign"}], ["grokfast:alpha=0.5"]])
def test_race_over_a_config_with_regularisers_is_refused(tmp_path, configured):
    config = _config(tmp_path, configured)
    out = tmp_path / "race"
    argv = ["race", "--config", str(config), "--regs", "none,grokalign", "--seeds", "1",
            "--max-epochs", "1", "--out", str(out), "-q"]  # fmt: skip
    line = one_error(CliRunner().invoke(app, argv))
    assert "every --regs entry would carry, 'none' included" in line
    assert not out.exists()


def test_race_over_a_config_without_regularisers_runs(tmp_path):
    config = _config(tmp_path, [])
    argv = ["race", "--config", str(config), "--regs", "none,grokalign", "--seeds", "1",
            "--max-epochs", "1", "--out", str(tmp_path / "race"), "-q"]  # fmt: skip
    assert CliRunner().invoke(app, argv).exit_code == 0
