"""Verdict rules and recommendations on synthetic trajectories."""

import pytest

from alignctl.errors import InputError
from alignctl.report.verdict import DEFAULTS, checkpoint_verdict, rank, recommend, thresholds

T = thresholds(None)


def ck(train, test, step=0, diverged=False, **metrics):
    m = {"centroid_alignment": 0.1, "centroid_norm": 1.0, "jacobian_alignment_full": 0.1,
         "jacobian_erank": 3.0}  # fmt: skip
    m.update(metrics)
    return {"step": step, "train_accuracy": train, "test_accuracy": test, "metrics": m,
            "diverged": diverged}  # fmt: skip


@pytest.mark.parametrize(
    "entry, grokked, expected",
    [
        (ck(0.5, 0.5), None, "learning"),
        (ck(1.0, 0.5), None, "memorising"),  # binary task at chance
        (ck(1.0, 0.95), None, "generalising"),
        (ck(1.0, 0.95, jacobian_alignment_full=0.9, jacobian_erank=1.1), None, "robust"),
        (ck(1.0, 0.85), {"test_acc": 0.9}, "memorising"),  # the task's grokked criterion
        (ck(1.0, 0.91), {"test_acc": 0.9}, "generalising"),
        (ck(1.0, None, diverged=True), None, "diverged"),
    ],
)
def test_checkpoint_verdicts(entry, grokked, expected):
    assert checkpoint_verdict(entry, n_classes=2, grokked=grokked, t=T)[0] == expected


def test_hard_dataset_judged_relative_to_chance():
    # 10 classes, 55% test accuracy: skill (0.55 - 0.1) / 0.9 = 0.5 -> generalising
    assert checkpoint_verdict(ck(1.0, 0.55), n_classes=10, grokked=None, t=T)[0] == "generalising"
    assert checkpoint_verdict(ck(1.0, 0.30), n_classes=10, grokked=None, t=T)[0] == "memorising"


def test_no_test_split_is_inferred_from_alignment():
    v, inferred = checkpoint_verdict(
        ck(1.0, None, centroid_alignment=0.7), n_classes=2, grokked=None, t=T
    )
    assert (v, inferred) == ("generalising", True)
    v, inferred = checkpoint_verdict(
        ck(1.0, None, centroid_alignment=-0.3), n_classes=2, grokked=None, t=T
    )
    assert (v, inferred) == ("memorising", True)


def test_adversarial_accuracy_gates_robust():
    e = ck(1.0, 0.95, jacobian_alignment_full=0.9, jacobian_erank=1.1)
    e["adversarial_accuracy"] = 0.1
    assert checkpoint_verdict(e, n_classes=2, grokked=None, t=T)[0] == "generalising"


def test_thresholds_override_and_unknown_key():
    assert thresholds({"fit": 0.9})["fit"] == 0.9
    with pytest.raises(InputError, match="valid: " + ", ".join(DEFAULTS)):
        thresholds({"nope": 1})


def _traj(verdicts, ca, norms=None):
    out = []
    for i, (v, a) in enumerate(zip(verdicts, ca, strict=True)):
        e = ck(1.0, 0.5, step=i, centroid_alignment=a)
        if norms:
            e["metrics"]["centroid_norm"] = norms[i]
        e["verdict"] = v
        out.append(e)
    return out


def test_recommendations():
    rising = _traj(["memorising"] * 6, [0.1, 0.15, 0.2, 0.3, 0.4, 0.5])
    assert recommend(rising, T)["action"] == "keep-training"
    flat_robust = _traj(["robust"] * 6, [0.8, 0.9, 0.95, 0.95, 0.95, 0.95])
    assert recommend(flat_robust, T)["action"] == "stop"
    growing_norms = _traj(["memorising"] * 6, [0.1] * 6, norms=[1, 2, 3, 4, 5, 6])
    r = recommend(growing_norms, T)
    assert r["action"] == "try-grokalign" and "norms grow" in r["reason"]
    collapse = _traj(["generalising"] * 6, [0.2, 0.6, 0.8, 0.5, 0.2, 0.1])
    assert recommend(collapse, T)["action"] == "investigate"
    diverged = _traj(["memorising", "diverged"], [0.1, 0.1])
    assert recommend(diverged, T)["action"] == "investigate"


def test_rank_order():
    assert rank("learning") < rank("memorising") < rank("generalising") < rank("robust")
    assert rank("diverged") < rank("learning")


def test_inferred_generalisation_from_recovery_after_the_dip():
    history = [ck(1.0, None, centroid_alignment=v) for v in (-0.4, -0.3, -0.2)]
    v, inferred = checkpoint_verdict(ck(1.0, None, centroid_alignment=-0.1), n_classes=2,
                                     grokked=None, t=T, history=history)  # fmt: skip
    assert (v, inferred) == ("memorising", True)  # recovered 75% of the dip
    v, _ = checkpoint_verdict(ck(1.0, None, centroid_alignment=-0.05), n_classes=2, grokked=None,
                              t=T, history=history)  # fmt: skip
    assert v == "generalising"  # recovered 87.5%
    shallow = [ck(1.0, None, centroid_alignment=-0.05)]
    v, _ = checkpoint_verdict(ck(1.0, None, centroid_alignment=0.0), n_classes=2, grokked=None,
                              t=T, history=shallow)  # fmt: skip
    assert v == "generalising"  # a dip within noise is no memorising signature
