"""Held-out verdict and recommendation cases (runs the verdict corpus never had): a run whose
only fitted checkpoint is its last (two or three checkpoints), and data whose classes are not
balanced (chance is then not 1/C)."""

import re

import pytest

from alignctl.report.recommend import recommend
from alignctl.report.verdict import thresholds

T = thresholds(None)


def entry(step, train, test, verdict):
    return {"step": step, "train_accuracy": train, "test_accuracy": test, "verdict": verdict,
            "metrics": {}, "diverged": False}  # fmt: skip


@pytest.mark.parametrize(
    "run, action",
    [
        # step 0 and the end only: the test accuracy rose with the fit, not after it
        ([entry(0, 0.17, 0.18, "learning"), entry(1500, 1.0, 1.0, "generalising")], "stop"),
        (
            [
                entry(0, 0.05, 0.04, "learning"),
                entry(300, 0.6, 0.05, "learning"),
                entry(900, 1.0, 0.12, "memorising"),
            ],
            "try-grokalign",
        ),  # fmt: skip
        ([entry(0, 0.05, 0.04, "learning"), entry(900, 1.0, 0.05, "memorising")], "investigate"),
    ],
)
def test_a_run_fitted_only_at_its_last_checkpoint_has_no_trend_since_the_fit(run, action):
    r = recommend(run, T, n_classes=23)
    assert r["action"] == action, r["reason"]
    assert not re.search(r"\b(flat|rising|rises)\b", r["reason"]), r["reason"]
    assert f"step {run[-1]['step']}" in r["reason"] and "first checkpoint that fits" in r["reason"]
    # the rise before the fit is never quoted as a trend: no step is named twice either
    assert len(re.findall(r"at step 0\b", r["reason"])) <= 1


def test_a_rise_over_three_checkpoints_names_each_step_once():
    run = [entry(0, 0.1, 0.1, "learning"), entry(10, 1.0, 0.3, "memorising"),
           entry(20, 1.0, 0.6, "generalising")]  # fmt: skip
    r = recommend(run, T, n_classes=10)
    assert r["action"] == "keep-training"
    assert r["reason"].count("at step 10") == 1 and "0.600 at step 20" in r["reason"]
