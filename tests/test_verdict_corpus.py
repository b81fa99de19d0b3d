"""The verdict corpus builder (benchmarks/verdict_corpus.py) builds a tiny run that alignctl
analyses through the factory protocol, and its truth follows the issue's definition."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import verdict_corpus as vc  # noqa: E402


@pytest.mark.parametrize(
    "train, test, chance, expected",
    [
        (0.5, 0.5, 0.1, "learning"),
        (0.95, 0.2, 0.1, "ambiguous"),
        (1.0, 0.2, 0.1, "memorising"),  # ratio 0.11
        (1.0, 0.5, 0.1, "ambiguous"),  # ratio 0.44
        (1.0, 0.95, 0.1, "generalised"),  # ratio 0.94
        (1.0, float("nan"), 0.1, "diverged"),
    ],
)
def test_truth_label(train, test, chance, expected):
    assert vc.truth_label(train, test, chance) == expected


def test_every_run_is_named_once_and_families_are_many():
    names = [r["name"] for r in vc.RUNS]
    assert len(names) == len(set(names)) >= 24
    assert len({r["family"] for r in vc.RUNS}) >= 10
    assert {r["loop"] for r in vc.RUNS} == {"plain", "alignctl"}


def test_a_tiny_plain_run_builds_and_is_cached(tmp_path):
    from alignctl import analyze, open_run

    model = {"kind": "mlp", "d": 16, "hidden": [8], "c": 4}
    data = ("gmm", {"n_train": 40, "n_test": 40})
    spec = vc.plain("tiny", "test", data, model, steps=30, accept=["stop"])
    truth = vc.build(spec, tmp_path)
    assert 12 <= len(truth["checkpoints"]) <= 17 and truth["checkpoints"][0]["step"] == 0
    mtime = (tmp_path / "tiny" / "truth.json").stat().st_mtime_ns
    assert vc.build(spec, tmp_path) == truth  # cached: not trained again
    assert (tmp_path / "tiny" / "truth.json").stat().st_mtime_ns == mtime
    report = analyze(open_run(tmp_path / "tiny"), samples=16, device="cpu")
    assert [c["step"] for c in report["checkpoints"]] == [c["step"] for c in truth["checkpoints"]]
    for got, want in zip(report["checkpoints"], truth["checkpoints"], strict=True):
        assert got["train_accuracy"] == pytest.approx(want["train"], abs=1e-6)
    assert json.loads((tmp_path / "tiny" / "truth.json").read_text())["accept"] == ["stop"]
