"""The library's ``Trainer(dir, cfg).fit(n)`` (README, Python API) makes a run ``analyze`` reads,
and never mixes a new run into a folder that already holds one."""

from __future__ import annotations

import copy
import shutil

import pytest
from _configs import SPARSE_PARITY_GROKALIGN

from alignctl import Trainer, analyze, open_run
from alignctl.errors import InputError
from alignctl.runs.config import config_from_dict


def _trainer(run, tmp_path):
    return Trainer(run, config_from_dict(copy.deepcopy(SPARSE_PARITY_GROKALIGN), tmp_path), "cpu")


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["missing", "nested/missing", "empty"])
def test_fit_into_a_new_folder_makes_a_run_analyze_reads(tmp_path, where):
    run = tmp_path / where
    if where == "empty":
        run.mkdir()
    _trainer(run, tmp_path).fit(2)
    assert (run / "alignctl.yaml").is_file()  # the run describes itself, as alignctl train's
    report = analyze(open_run(run))
    assert [c["step"] for c in report["checkpoints"]][0] == 0


@pytest.mark.parametrize("mark", ["all", "run.json", "train_log.jsonl", "checkpoints"])
def test_fit_from_step_0_into_a_run_folder_is_refused_and_changes_nothing(tmp_path, mark):
    run = tmp_path / "run"
    _trainer(run, tmp_path).fit(3)
    if mark != "all":  # the folder holds only one mark of a run (and its config)
        for p in run.iterdir():
            if p.name not in (mark, "alignctl.yaml"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    before = _snapshot(run)
    with pytest.raises(InputError, match=r"already holds a run .*Trainer\.restore\(\)"):
        _trainer(run, tmp_path).fit(2)
    assert _snapshot(run) == before


def test_a_restored_run_and_a_second_fit_of_one_trainer_go_on(tmp_path):
    run = tmp_path / "run"
    tr = _trainer(run, tmp_path)
    tr.fit(0)  # step 0 saved; fit again from step 0 is the same run, not a new one
    tr.fit(2)
    resumed = _trainer(run, tmp_path)
    resumed.restore()
    resumed.fit(4)
    steps = [c["step"] for c in analyze(open_run(run))["checkpoints"]]
    assert steps == sorted(set(steps)) and steps[-1] == resumed.step
