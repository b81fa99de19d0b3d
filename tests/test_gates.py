"""Gate semantics on report dicts."""

import json

import pytest

from alignctl.errors import InputError
from alignctl.report.gates import evaluate_gates


def report(ca=0.6, verdict="generalising", test=0.9):
    return {"metric_names": ["centroid_alignment", "jacobian_erank"], "verdict": verdict,
            "checkpoints": [{"metrics": {"centroid_alignment": ca, "jacobian_erank": 2.0},
                             "train_accuracy": 1.0, "test_accuracy": test}]}  # fmt: skip


def test_fail_under_and_over():
    g = evaluate_gates(
        report(), fail_under=["centroid_alignment=0.5"], fail_over=["jacobian_erank=1.5"]
    )
    assert [x["passed"] for x in g] == [True, False]
    assert g[1]["rule"] == "jacobian_erank <= 1.5" and g[1]["value"] == 2.0


def test_accuracy_gates():
    assert evaluate_gates(report(test=0.9), fail_under=["test_accuracy=0.95"])[0]["passed"] is False


def test_baseline_max_drop(tmp_path):
    base = tmp_path / "base.json"
    base.write_text(json.dumps(report(ca=0.8)))
    ok = evaluate_gates(report(ca=0.75), baseline=base, max_drop=["centroid_alignment=0.1"])
    bad = evaluate_gates(report(ca=0.65), baseline=base, max_drop=["centroid_alignment=0.1"])
    assert ok[0]["passed"] and not bad[0]["passed"]


@pytest.mark.parametrize("verdict, need, passed", [
    ("generalising", "memorising", True), ("generalising", "generalising", True),
    ("generalising", "robust", False), ("diverged", "learning", False)])  # fmt: skip
def test_require_verdict(verdict, need, passed):
    assert evaluate_gates(report(verdict=verdict), require_verdict=need)[0]["passed"] is passed


@pytest.mark.parametrize("kwargs, msg", [
    ({"fail_under": ["nope=1"]}, "unknown metric"),
    ({"fail_under": ["centroid_alignment"]}, "METRIC=VALUE"),
    ({"max_drop": ["centroid_alignment=0.1"]}, "needs --baseline"),
    ({"require_verdict": "great"}, "unknown verdict")])  # fmt: skip
def test_usage_errors(kwargs, msg):
    with pytest.raises(InputError, match=msg):
        evaluate_gates(report(), **kwargs)
