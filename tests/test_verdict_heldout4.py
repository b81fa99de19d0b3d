"""Held-out verdict and recommendation cases, round 4 (runs the corpus never had): a test
accuracy that fell because training went wrong, not because the network overfitted (train
accuracy fell with it: an underfitting linear model, unstable training), and a test-accuracy
bump before the fit (an untrained or pre-trained network's guess, a transient while random
labels are fitted) that the fitted network never keeps."""

import pytest

from alignctl.report.recommend import recommend
from alignctl.report.verdict import thresholds

T = thresholds(None)


def entry(step, train, test, verdict):
    return {"step": step, "train_accuracy": train, "test_accuracy": test, "verdict": verdict,
            "metrics": {}, "diverged": False}  # fmt: skip


def run(rows, c):
    from alignctl.report.verdict import judge

    out = []
    for step, train, test in rows:
        e = entry(step, train, test, None)
        e.update(judge(e, n_classes=c, grokked=None, t=T, history=out))
        out.append(e)
    return out


# measured (train, test) accuracies of held-out runs, steps log-spaced
LINEAR_RINGS = [(0, 0.26, 0.33), (6, 0.34, 0.35), (21, 0.38, 0.38), (39, 0.57, 0.51),
                (71, 0.52, 0.48), (131, 0.53, 0.46), (241, 0.52, 0.44), (443, 0.48, 0.42),
                (815, 0.45, 0.41), (1500, 0.47, 0.40)]  # fmt: skip
LAZY_RANDOM = [(0, 0.29, 0.42), (1, 0.31, 0.14), (3, 0.31, 0.22), (11, 0.41, 0.27),
               (39, 0.49, 0.25), (131, 0.61, 0.23), (241, 1.0, 0.26), (443, 1.0, 0.26),
               (815, 1.0, 0.25), (1500, 1.0, 0.255)]  # fmt: skip
SCALAR_RANDOM = [(0, 0.55, 0.45), (1, 0.61, 0.65), (2, 0.70, 0.57), (4, 0.75, 0.46),
                 (14, 0.95, 0.51), (26, 1.0, 0.51), (96, 1.0, 0.54), (354, 1.0, 0.53),
                 (1303, 1.0, 0.54), (2500, 1.0, 0.538)]  # fmt: skip
OFFSET_RANDOM = [(0, 0.22, 0.25), (26, 0.24, 0.25), (50, 0.33, 0.415), (96, 0.38, 0.39),
                 (184, 0.47, 0.29), (679, 0.69, 0.28), (1303, 0.94, 0.26),
                 (2500, 1.0, 0.262)]  # fmt: skip


def test_a_decline_with_train_accuracy_falling_too_is_not_overfitting():
    r = recommend(run(LINEAR_RINGS, 3), T, n_classes=3)
    # before: stop, "keep the step-39 checkpoint; further training overfits"
    assert r["action"] == "investigate", r["reason"]
    assert "0.507" not in r["reason"] and "0.510 at step 39" in r["reason"]
    assert "0.570 -> 0.470" in r["reason"] and "not overfitting" in r["reason"]


def test_overfitting_with_train_accuracy_still_rising_is_still_stop():
    # label noise: test peaks while train is at the clean share, then falls as train rises
    rows = [(0, 0.2, 0.2), (14, 0.62, 0.99), (50, 0.69, 0.91), (96, 0.93, 0.77),
            (184, 1.0, 0.73), (2500, 1.0, 0.71)]  # fmt: skip
    r = recommend(run(rows, 4), T, n_classes=4, chance=0.25)
    assert r["action"] == "stop" and "0.990 at step 14" in r["reason"]


@pytest.mark.parametrize(
    "rows, c, chance, bump",
    [
        (LAZY_RANDOM, 4, 0.252, "0.420 at step 0"),  # before: stop, keep the untrained network
        (SCALAR_RANDOM, 1, 0.52, "0.650 at step 1"),  # before: stop, keep step 1
        (OFFSET_RANDOM, 4, 0.252, None),  # before: stop, keep step 50 (train 0.33)
    ],
)
def test_a_test_bump_before_the_fit_is_no_model_to_keep(rows, c, chance, bump):
    r = recommend(run(rows, c), T, n_classes=c, chance=chance)
    assert r["action"] == "investigate", r["reason"]
    assert "chance" in r["reason"] and "keep the" not in r["reason"]
    if bump:
        assert bump in r["reason"] and "did not last" in r["reason"]
