"""Files alignctl did not write are never deleted or replaced: `train --force` and a race
replace only alignctl's own run, and a race never reports another configuration's pairs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from alignctl.cli.assemble import app

runner = CliRunner()
TINY = {
    "model": {"arch": "mlp", "in_features": 6, "hidden": [8], "out_features": 2},
    "data": {"task": "sparse-parity", "n": 40, "n_bits": 6, "k": 2, "seed": 0},
    "train": {"epochs": 2, "optimizer": {"name": "adamw", "lr": 0.01}},
    "grokked": {"train_acc": 0.0},
}  # fmt: skip


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


# what a user's folder may hold under alignctl's run-file names
FOREIGN = {
    "their checkpoints": {"checkpoints/model.pt": b"weights"},
    "their state folder": {"alignctl.yaml": b"a: 1\n", "checkpoints/state/opt.bin": b"x"},
    "their run.json": {"alignctl.yaml": b"a: 1\n", "run.json": b'{"loss": 1}'},
    "a log without a config": {"train_log.jsonl": b'{"loss": 1}\n'},
    "a run.json without a config": {"run.json": b'{"alignctl_version": "0"}'},
}


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("layout", list(FOREIGN))
def test_train_never_replaces_files_it_did_not_write(tmp_path, layout, force):
    """--force once deleted a foreign checkpoints/ folder (the user's model.pt) and run.json
    and wrote the run over them; without --force the error called them a run to --resume."""
    out = tmp_path / "out"
    for name, data in {**FOREIGN[layout], "notes.txt": b"mine"}.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    before = _tree(out)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(TINY))
    args = ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(out), "-q"]
    r = runner.invoke(app, args + ["--force"] * force)
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and "did not write" in r.stderr
    assert _tree(out) == before


def test_train_force_still_replaces_its_own_run(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    args = ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(out), "-q"]
    assert runner.invoke(app, args).exit_code == 0
    (out / "notes.txt").write_text("mine")  # beside the run: kept
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "--resume" in r.stderr
    assert runner.invoke(app, [*args, "--epochs", "1", "--force"]).exit_code == 0
    assert json.loads((out / "run.json").read_text())["epochs"] == 1
    assert (out / "notes.txt").read_text() == "mine"


def test_a_race_never_reports_another_configurations_pairs(tmp_path):
    """A second race into the same --out with another task/config/setting once reused the
    first race's finished pairs and reported their epochs as its own."""
    out = tmp_path / "race"

    def race(cfg: dict, regs: str, epochs: int = 3):
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
        return runner.invoke(app, ["race", "--config", str(tmp_path / "c.yaml"), "--regs", regs,
                                   "--seeds", "1", "--max-epochs", str(epochs), "--out", str(out),
                                   "--json", "-", "-q"])  # fmt: skip

    first = race(TINY, "none,grokalign")
    assert first.exit_code == 0, first.output
    before = _tree(out)
    other_lr = {**TINY, "train": {**TINY["train"], "optimizer": {"name": "sgd", "lr": 0.1}}}
    other_data = {**TINY, "data": {**TINY["data"], "n": 60}}
    for cfg in (other_lr, other_data):
        r = race(cfg, "none")
        assert r.exit_code == 2 and "another configuration" in r.stderr, r.output
        assert r.stderr.count("\n") == 1 and _tree(out) == before
    again = race(TINY, "none,grokalign")  # the same race: every pair reused, nothing trained
    assert again.exit_code == 0 and _tree(out) == before
    assert json.loads(again.stdout)["rows"] == json.loads(first.stdout)["rows"]
    assert race(TINY, "none", epochs=4).exit_code == 0  # its own pairs, a new cap: retrained
    # a pair folder holding the user's files is refused, not emptied
    mine = out / "grokfast" / "seed_0" / "checkpoints" / "model.pt"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"weights")
    r = race(TINY, "none,grokfast", epochs=4)
    assert r.exit_code == 2 and "did not write" in r.stderr and mine.read_bytes() == b"weights"


DEFAULTS = {"lambda": 0.01, "n_proj": 1, "every": 1, "norm": "fro", "subsample": 1.0}
CHOICES = {"lambda": [0.01, 0.1, 0.5], "n_proj": [1, 2, "exact"], "every": [1, 3],
           "norm": ["fro", "fro2"], "subsample": [1.0, 0.5]}  # fmt: skip


def _spelling(params: dict, draw) -> str:
    """One way of writing ``params``: any order, lambda or lam, 2 or 2.0, defaults explicit
    or not, blanks around the pieces."""
    pieces = []
    for k, v in params.items():
        if v == DEFAULTS[k] and draw(st.booleans()):
            continue  # a default left out
        key = draw(st.sampled_from(["lambda", "lam"])) if k == "lambda" else k
        text = f"{float(v)}" if isinstance(v, int) and draw(st.booleans()) else f"{v}"
        pieces.append(f"{key}={text}" if draw(st.booleans()) else f" {key} = {text} ")
    pieces = draw(st.permutations(pieces))
    return "grokalign" + (":" + ",".join(pieces) if pieces else "")


@settings(max_examples=80, deadline=None)
@given(a=st.fixed_dictionaries({k: st.sampled_from(v) for k, v in CHOICES.items()}),
       b=st.fixed_dictionaries({k: st.sampled_from(v) for k, v in CHOICES.items()}),
       data=st.data())  # fmt: skip
def test_a_race_trains_each_setting_once_however_it_is_spelled(a, b, data):
    """`none,baseline`, `grokalign:lambda=0.1,n_proj=2` and `grokalign:n_proj=2,lambda=0.1`,
    `lambda` and `lam`, `n_proj=2.0`: once trained twice and shown as two rows; two
    spellings are refused before anything trains exactly when they are one setting."""
    import tempfile

    from alignctl.errors import InputError
    from alignctl.train.race import run_race
    from alignctl.train.regularisers import setting

    first, second = _spelling(a, data.draw), _spelling(b, data.draw)
    same = a == b
    assert (setting(first) == setting(second)) == same
    if not same:
        return  # distinct settings would train: the refusal is what is checked here
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "c.yaml").write_text(yaml.safe_dump(TINY))
        for regs in (["none", first, second], ["none", "baseline"]):
            with pytest.raises(InputError, match="one setting twice"):
                run_race(config=Path(d) / "c.yaml", regs=regs, seeds=1, out=Path(d) / "o")
        assert not (Path(d) / "o").exists()
