"""`alignctl race`: a tiny race through the CLI, pairing and censoring, resume."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.train.race import table

runner = CliRunner()
TINY = {
    "model": {"arch": "mlp", "in_features": 8, "hidden": [32], "out_features": 2},
    "data": {"task": "sparse-parity", "n": 200, "n_bits": 8, "k": 2, "seed": 0},
    "train": {"epochs": 30, "loss": "cross_entropy",
              "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1}},
    "grokked": {"test_acc": 0.9},
}  # fmt: skip


def _run(r, s, epoch, secs=1.0):
    return {"grokked_epoch": epoch, "train_seconds": secs}


def test_pairing_censoring_and_speedup():
    results = {("none", 0): _run("none", 0, 100, 2.0), ("none", 1): _run("none", 1, None, 3.0),
               ("ga", 0): _run("ga", 0, 10, 0.5), ("ga", 1): _run("ga", 1, 20, 1.0)}  # fmt: skip
    rows = table(results, ["none", "ga"], [0, 1], max_epochs=200)
    base, ga = rows
    assert base["mean_epochs"] == 150  # the censored run counts at max_epochs
    assert ga["mean_epochs"] == 15 and ga["speedup"] == pytest.approx(10.0)
    assert base["grokked"] == 1 and ga["grokked"] == 2
    assert base["censored"] and ga["censored"]
    assert base["bound"] is None and ga["bound"] == "lower"  # censored baseline: speed-up >=
    assert base["p_value"] is None
    from scipy.stats import ttest_rel

    assert ga["p_value"] == pytest.approx(ttest_rel([100, 200], [10, 20]).pvalue)
    assert ga["wall_speedup"] == pytest.approx(2.5 / 0.75)


@pytest.mark.parametrize(
    ("base", "reg", "want", "mark"),
    [(100, 10, None, ""), (None, 10, "lower", ">="), (100, None, "upper", "<="),
     (None, None, "unknown", "~")],
)  # fmt: skip
def test_censored_speedup_is_marked_with_its_direction(base, reg, want, mark):
    from alignctl.cli.race import markdown_table

    results = {("none", 0): _run("none", 0, base), ("ga", 0): _run("ga", 0, reg)}
    rows = table(results, ["none", "ga"], [0], max_epochs=200)
    assert rows[1]["bound"] == want
    res = {"task": "t", "seeds": 1, "seed_offset": 0, "max_epochs": 200, "rows": rows}
    line = next(x for x in markdown_table(res).splitlines() if x.startswith("| ga |"))
    speedup = (200 if base is None else base) / (200 if reg is None else reg)
    assert line.split(" | ")[2] == f"{mark}{speedup:.2f}x"
    assert ("lower bound" in markdown_table(res)) == (want is not None)


def test_tiny_race_through_the_cli_and_resume(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "race"
    args = ["race", "--config", str(cfg), "--regs", "none,grokalign:lambda=0.1", "--seeds", "2",
            "--max-epochs", "30", "--out", str(out),
            "--json", str(tmp_path / "r.json")]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.stderr
    res = json.loads((tmp_path / "r.json").read_text())
    assert {"task", "seeds", "max_epochs", "rows"} <= set(res) and res["seeds"] == 2
    for row in res["rows"]:
        assert {"reg", "mean_epochs", "std_epochs", "speedup", "p_value", "mean_seconds",
                "wall_speedup", "grokked", "runs"} <= set(row)  # fmt: skip
    assert res["rows"][0]["p_value"] is None and res["rows"][0]["runs"] == 2
    assert "| none |" in r.stdout
    # the same seed gives the same data and initialisation to every regulariser
    a = yaml.safe_load((out / "none" / "seed_1" / "alignctl.yaml").read_text())
    b = yaml.safe_load((out / "grokalign__lambda=0.1" / "seed_1" / "alignctl.yaml").read_text())
    assert a["data"] == b["data"] and a["train"]["seed"] == b["train"]["seed"] == 1
    # a second run skips every finished pair
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("run.json")}
    r2 = runner.invoke(app, args)
    assert r2.exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("run.json")} == stamps
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == res["rows"]


def test_race_rejects_unknown_regulariser(tmp_path):
    args = ["race", "--task", "sparse-parity", "--regs", "none,bogus", "--seeds", "1",
            "--out", str(tmp_path / "o")]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "bogus" in r.stderr
