"""Held-out checks of `alignctl train` as users run it: runs interrupted at moments the other
tests never chose (after the last checkpoint, before run.json), resumed with other options
(`--epochs` shorter or longer, no schedule flags), and finished runs resumed again.

A kill -9 is reproduced exactly by what it leaves on disk: the checkpoints up to some step (a
later one never landed) and no run.json (a run removes its summary as it starts training)."""

import functools
import json
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from alignctl.cli.assemble import app

TINY = {
    "model": {"arch": "mlp", "in_features": 10, "hidden": [16, 16], "out_features": 2},
    "data": {"task": "sparse-parity", "n": 120, "n_bits": 10, "k": 3, "seed": 0},
    "train": {
        "epochs": 8, "batch_size": 32, "loss": "cross_entropy", "seed": 0,
        "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1},
    },
    "grokked": {"test_acc": 0.9},
}  # fmt: skip


def _cli(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def _config(tmp_path: Path, **train) -> Path:
    d = json.loads(json.dumps(TINY))
    d["train"].update(train)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def _train(tmp_path: Path, out: str, *args) -> Path:
    r = _cli("train", "--config", _config(tmp_path), "--out", tmp_path / out, "-q", *args)
    assert r.exit_code == 0, r.stderr
    return tmp_path / out


def _killed_copy(run: Path, dest: Path, after_step: int) -> Path:
    """``run`` as a kill -9 would have left it with ``after_step`` its last checkpoint."""
    shutil.copytree(run, dest)
    for f in (dest / "checkpoints").rglob("step_*"):
        if int(f.name.split("_")[1].split(".")[0]) > after_step:
            f.unlink()
    (dest / "run.json").unlink()
    return dest


def _log(run: Path) -> list[dict]:
    lines = (run / "train_log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "train_seconds"} for x in lines]


def _ckpts(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("step_*.safetensors"))


def _summary(run: Path) -> dict:
    s = json.loads((run / "run.json").read_text())
    s.pop("train_seconds")
    return s


def _same_run(a: Path, b: Path) -> None:
    assert _ckpts(a) == _ckpts(b)
    assert _log(a) == _log(b)
    assert _summary(a) == _summary(b)
    wa, wb = (
        load_file(str(a / "checkpoints" / _ckpts(a)[-1])),
        load_file(str(b / "checkpoints" / _ckpts(b)[-1])),
    )
    assert wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa)


def test_a_kill_between_the_last_checkpoint_and_run_json_resumes_to_the_same_summary(tmp_path):
    """Before: the resumed run trained nothing, so it had evaluated nothing, and run.json got
    ``train_accuracy``/``test_accuracy`` null (the finished run's accuracies lost)."""
    ref = _train(tmp_path, "ref")
    run = _killed_copy(ref, tmp_path / "run", after_step=10**9)
    r = _cli("train", "--resume", run, "-q")
    assert r.exit_code == 0, r.stderr
    _same_run(ref, run)


def test_a_kill_after_the_step_0_checkpoint_logs_epoch_0_once(tmp_path):
    """Before: a run resumed from its step-0 checkpoint was taken for a new one: epoch 0 was
    evaluated again (two epoch-0 lines in train_log.jsonl) and step 0 saved again."""
    ref = _train(tmp_path, "ref", "--save-every", 4)
    run = _killed_copy(ref, tmp_path / "run", after_step=0)
    r = _cli("train", "--resume", run, "-q")
    assert r.exit_code == 0, r.stderr
    _same_run(ref, run)


def test_resuming_a_finished_run_changes_nothing_and_says_so(tmp_path):
    run = _train(tmp_path, "run")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    r = _cli("train", "--resume", run)
    assert r.exit_code == 0, r.stderr
    assert "nothing to train" in r.stderr
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after.keys() == before.keys()
    summary = json.loads(before[run / "run.json"])
    assert json.loads(after[run / "run.json"]) == summary
    assert summary["train_accuracy"] is not None


@pytest.mark.parametrize("epochs", [4, 7])
def test_resume_with_fewer_epochs_than_trained_is_one_line_exit_2_nothing_changed(tmp_path, epochs):
    """Before: exit 0, run.json rewritten with ``epochs`` 4 below ``epochs_completed`` 8 and
    null accuracies."""
    run = _train(tmp_path, "run")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    r = _cli("train", "--resume", run, "--epochs", epochs)
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "8 epochs" in err, err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resume_with_more_epochs_is_recorded_for_the_next_resume(tmp_path):
    """Before: alignctl.yaml kept ``epochs: 8``; a later plain ``--resume`` wrote run.json
    ``epochs`` 8 beside ``epochs_completed`` 12."""
    ref = _train(tmp_path, "ref", "--epochs", 12)
    run = _train(tmp_path, "run")
    r = _cli("train", "--resume", run, "--epochs", 12, "-q")
    assert r.exit_code == 0, r.stderr
    assert yaml.safe_load((run / "alignctl.yaml").read_text())["train"]["epochs"] == 12
    r = _cli("train", "--resume", run, "-q")
    assert r.exit_code == 0, r.stderr
    assert _summary(run) == _summary(ref)
    w_ref = load_file(str(ref / "checkpoints" / _ckpts(ref)[-1]))
    w_run = load_file(str(run / "checkpoints" / _ckpts(run)[-1]))
    assert all(w_ref[k].equal(w_run[k]) for k in w_ref)


@pytest.mark.parametrize(
    "options",
    [
        ["--eval-every", 3, "--save-every", 3],
        ["--save-schedule", "log:3", "--eval-every", 2],
        ["--save-every", 5, "--reg", "grokfast"],
    ],
)
def test_schedule_options_are_recorded_and_a_plain_resume_keeps_them(tmp_path, options):
    """Before: ``--eval-every``/``--save-every``/``--save-schedule`` were not in alignctl.yaml,
    so ``--resume`` fell back to every-epoch evaluation and the default checkpoints (another
    log, other checkpoint files, and with --stop-when-grokked another grokked epoch)."""
    ref = _train(tmp_path, "ref", *options)
    saved = yaml.safe_load((ref / "alignctl.yaml").read_text())["train"]
    given = dict(zip(options[::2], options[1::2], strict=True))
    for flag, key in (("--eval-every", "eval_every"), ("--save-every", "save_every"),
                      ("--save-schedule", "save_schedule")):  # fmt: skip
        if flag in given:
            assert saved[key] == given[flag]
    run = _killed_copy(ref, tmp_path / "run", after_step=4)
    r = _cli("train", "--resume", run, "-q")
    assert r.exit_code == 0, r.stderr
    _same_run(ref, run)


def _grokking_config(tmp_path: Path) -> Path:
    d = json.loads(json.dumps(TINY))
    d["grokked"] = {"train_acc": 0.7}  # reached after a few epochs at lr 0.01
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_stop_when_grokked_is_recorded_and_a_killed_run_stops_where_it_would_have(tmp_path):
    """Before: a run started with --stop-when-grokked, killed before grokking and resumed
    with plain ``--resume``, trained on to its last epoch."""
    cfg = _grokking_config(tmp_path)
    args = ["--config", cfg, "--epochs", 60, "--save-every", 1, "--stop-when-grokked", "-q"]
    r = _cli("train", *args, "--out", tmp_path / "ref")
    assert r.exit_code == 0, r.stderr
    ref = tmp_path / "ref"
    grokked = json.loads((ref / "run.json").read_text())["grokked_epoch"]
    assert grokked is not None and 1 < grokked < 60
    run = _killed_copy(ref, tmp_path / "run", after_step=2)
    r = _cli("train", "--resume", run, "-q")
    assert r.exit_code == 0, r.stderr
    _same_run(ref, run)
    # a grokked run that stopped trains on only when asked to, and says so otherwise
    r = _cli("train", "--resume", run, "--epochs", 60)
    assert r.exit_code == 0 and "grokked" in r.stderr
    assert _ckpts(run) == _ckpts(ref)
    r = _cli("train", "--resume", run, "--no-stop-when-grokked", "--epochs", grokked + 2, "-q")
    assert r.exit_code == 0, r.stderr
    assert json.loads((run / "run.json").read_text())["epochs_completed"] == grokked + 2


@pytest.mark.parametrize(
    "spec",
    [
        "grokfast:lamb=1e39",
        "grokfast:filter=ma,window=2,lamb=-1e39",
        "grokalign:eps=1e39",
        "grokalign:lambda=1e300",
        "grokunalign:eps=3.5e38",
    ],
)
def test_a_parameter_past_the_weights_float_range_is_one_line_before_training(tmp_path, spec):
    """Before: an internal error in the first step ('value cannot be converted to type float
    without overflow'), after the run folder and its step-0 checkpoint were written (or, for
    lambda, a run that diverged at step 1)."""
    r = _cli("train", "--config", _config(tmp_path), "--out", tmp_path / "o", "--reg", spec)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "float32" in err and spec.split("=")[-1] in err.replace("e+", "e"), err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "freeze, frozen",
    [
        (["1"], {"1.weight", "1.bias"}),  # module 1 only: not 11. and 13.
        (["1."], {"1.weight", "1.bias"}),
        (["1.weight", "13"], {"1.weight", "13.weight", "13.bias"}),
        (["1.w"], {"1.weight"}),  # not a whole name: the start of names, as documented
    ],
)
def test_a_freeze_prefix_naming_a_module_freezes_that_module_only(tmp_path, freeze, frozen):
    """Before: ``freeze: ['1']`` on an nn.Sequential of 15 modules froze layers 11 and 13
    too (the names were matched by their first characters)."""
    from alignctl import Trainer
    from alignctl.runs.config import config_from_dict

    d = json.loads(json.dumps(TINY))
    d["model"]["hidden"] = [8] * 6  # Linear layers at 1, 3, ..., 13
    d["train"]["freeze"] = freeze
    tr = Trainer(tmp_path / "r", config_from_dict(d, tmp_path), "cpu")
    assert {n for n, p in tr.model.named_parameters() if not p.requires_grad} == frozen


CRASHING_NET = """import torch


class Net(torch.nn.Module):
    def __init__(self, seed):
        super().__init__()
        self.lin = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(),
                                       torch.nn.Linear(16, 2))
        self.seed, self.calls = seed, 0

    def forward(self, x):
        self.calls += 1
        if self.seed == 1 and self.calls > 12:
            raise RuntimeError("boom in the user's forward")
        return self.lin(x)


def make():
    return Net(torch.initial_seed())
"""


def _crashing_config(tmp_path: Path) -> Path:
    (tmp_path / "crashnet.py").write_text(CRASHING_NET)
    d = json.loads(json.dumps(TINY))
    d["model"] = {"factory": "crashnet.py:make"}
    d["train"]["epochs"] = 6
    d["grokked"] = {"test_acc": 0.999}  # never: every pair trains all its epochs
    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_a_user_model_that_raises_mid_run_is_one_line_naming_its_line(tmp_path):
    """Before: 'internal error: RuntimeError: boom ...; this is a bug in alignctl'."""
    cfg = _crashing_config(tmp_path)
    r = _cli("train", "--config", cfg, "--seed", 1, "--out", tmp_path / "o", "-q")
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "crashnet.py:14" in err and "boom" in err and "bug in alignctl" not in err, err
    assert "intact" in err


def test_a_race_pair_whose_model_raises_is_one_line_naming_the_pair_and_keeps_the_others(
    tmp_path,
):
    cfg = _crashing_config(tmp_path)
    out = tmp_path / "race"
    r = _cli("race", "--config", cfg, "--regs", "none,grokfast", "--seeds", 2, "--out", out, "-q")
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "pair none seed 1" in err and "crashnet.py:14" in err, err
    for reg in ("none", "grokfast"):  # seed 0 trained first (seed-major) and is kept
        assert json.loads((out / reg / "seed_0" / "run.json").read_text())["status"] == "finished"


def test_an_exception_in_alignctls_own_code_stays_an_internal_error(tmp_path, monkeypatch):
    from alignctl import Trainer
    from alignctl.runs.config import config_from_dict
    from alignctl.train.regularisers import real
    from alignctl.train.regularisers.orthograd import OrthoGrad

    # raised inside alignctl's own code (real() compares the model with a number): no frame
    # of the user's is involved, so it is reported as the bug it is
    broken = staticmethod(functools.partial(real, "alpha", 5.0))
    monkeypatch.setattr(OrthoGrad, "after_backward", broken)
    d = json.loads(json.dumps(TINY))
    d["train"]["regularisers"] = [{"name": "orthograd"}]
    tr = Trainer(tmp_path / "r", config_from_dict(d, tmp_path), "cpu")
    with pytest.raises(TypeError):
        tr.fit(2)


RESULT = {
    "task": "c.yaml", "seeds": 2, "seed_offset": 0, "max_epochs": 30,
    "rows": [
        {"reg": "none", "mean_epochs": 13, "std_epochs": 0.5, "speedup": 1.0, "p_value": None,
         "test": None, "mean_seconds": 0.07, "wall_speedup": 1.0, "grokked": 2, "runs": 2,
         "diverged": 0, "censored": False, "bound": None},
        {"reg": "grokalign", "mean_epochs": 7.5, "std_epochs": 0.5, "speedup": 1.73,
         "p_value": 0.04, "test": "paired t-test", "mean_seconds": 0.08, "wall_speedup": 0.9,
         "grokked": 2, "runs": 2, "diverged": 0, "censored": False, "bound": None},
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    "field, value",
    [
        ("p_value", -1), ("p_value", 1.5), ("mean_epochs", "abc"), ("mean_epochs", True),
        ("std_epochs", -3), ("grokked", 5), ("diverged", -1), ("runs", 0),
        ("bound", "sideways"), ("test", "chi-square"), ("speedup", "fast"), ("reg", 3),
    ],
)  # fmt: skip
def test_render_refuses_a_result_edited_into_impossible_numbers(tmp_path, field, value):
    """Before: rendered as a table (p -1, 5/2 grokked, 'yes ± 0.0' epochs), exit 0."""
    d = json.loads(json.dumps(RESULT))
    d["rows"][1][field] = value
    path = tmp_path / "r.json"
    path.write_text(json.dumps(d))
    r = _cli("race", "--render", path, "--markdown", "-")
    assert r.exit_code == 2 and r.stdout == ""
    err = r.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and field in err, err


@pytest.mark.parametrize("dropped", [(), ("test", "bound", "diverged", "censored")])
def test_render_takes_a_valid_result_and_one_of_an_older_version(tmp_path, dropped):
    d = json.loads(json.dumps(RESULT))
    for row in d["rows"]:
        for key in dropped:
            row.pop(key)
    d["rows"][1]["added_later"] = "ignored"
    path = tmp_path / "r.json"
    path.write_text(json.dumps(d))
    r = _cli("race", "--render", path, "--markdown", "-")
    assert r.exit_code == 0, r.stderr
    assert "| grokalign | 7.5 ± 0.5 | 1.73x | 0.04 |" in r.stdout


@pytest.mark.parametrize("text", ["[1, 2]", "3", '"done"', "null"])
def test_a_pair_run_json_that_is_not_a_mapping_is_no_finished_pair(tmp_path, text):
    """race.finished() called .get on whatever a pair's run.json held: a list was an
    AttributeError (an internal error) instead of a pair to run again."""
    from alignctl.train.race import finished

    (tmp_path / "run.json").write_text(text)
    assert finished(tmp_path) is None
