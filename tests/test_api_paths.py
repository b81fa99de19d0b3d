"""The Python API's path and config arguments: a wrong kind (None, a number, a dict where a
Config is meant) is one InputError naming the argument, not pathlib's TypeError or an
AttributeError from inside (qa16b's leftovers)."""

from pathlib import Path

import pytest
import torch

import alignctl
from alignctl.errors import InputError

RUN = Path(__file__).parents[1] / "examples/checkpoints/sparse-parity-baseline"


@pytest.mark.parametrize("value", [None, 5, 2.5, b"runs", ["runs"]])
def test_open_run_path_of_the_wrong_kind(value):
    with pytest.raises(InputError, match="path must be a path"):
        alignctl.open_run(value)


def test_open_run_config_of_the_wrong_kind():
    with pytest.raises(InputError, match="config must be a path"):
        alignctl.open_run(RUN, config=5)


@pytest.mark.parametrize("value", [5, 2.5, ["x"]])
def test_monitor_out_of_the_wrong_kind(value):
    with pytest.raises(InputError, match="out must be a path"):
        alignctl.Monitor(torch.nn.Linear(3, 2), torch.randn(4, 3), out=value)


def test_analyze_cache_of_the_wrong_kind():
    with pytest.raises(InputError, match="cache must be a path"):
        alignctl.analyze(alignctl.open_run(RUN), cache=5, metrics="fast")


@pytest.mark.parametrize("cfg", [{"model": {}}, "alignctl.yaml", None])
def test_trainer_cfg_must_be_a_config(tmp_path, cfg):
    with pytest.raises(InputError, match="cfg must be an alignctl Config"):
        alignctl.Trainer(tmp_path / "run", cfg)
    assert not (tmp_path / "run").exists()  # nothing created


def test_trainer_run_dir_of_the_wrong_kind():
    cfg = alignctl.build_config(None, "sparse-parity", [], seed=0, epochs=1)
    with pytest.raises(InputError, match="run_dir must be a path"):
        alignctl.Trainer(5, cfg)


def test_the_right_kinds_still_work(tmp_path):
    assert alignctl.open_run(str(RUN)).checkpoints
    mon = alignctl.Monitor(torch.nn.Linear(3, 2), torch.randn(4, 3), out=str(tmp_path / "m"))
    mon.close()
    assert (tmp_path / "m" / "run.json").is_file()
