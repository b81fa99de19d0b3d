"""Verdict rules and recommendations on synthetic trajectories."""

import math
import re

import pytest

from alignctl.errors import InputError
from alignctl.report.evidence import infer, signals
from alignctl.report.recommend import recommend, regularisation
from alignctl.report.verdict import DEFAULTS, checkpoint_verdict, judge, rank, thresholds

T = thresholds(None)


def ck(train, test, step=0, diverged=False, **metrics):
    m = {"centroid_alignment": 0.1, "centroid_norm": 1.0, "jacobian_alignment_full": 0.1,
         "jacobian_erank": 3.0, "centred_alignment_full": 0.01, "centred_norm": 1.0}  # fmt: skip
    m.update(metrics)
    return {"step": step, "train_accuracy": train, "test_accuracy": test, "metrics": m,
            "diverged": diverged}  # fmt: skip


@pytest.mark.parametrize(
    "entry, grokked, expected",
    [
        (ck(0.5, 0.5), None, "learning"),
        (ck(1.0, 0.5), None, "memorising"),  # binary task at chance
        (ck(1.0, 0.95), None, "generalising"),
        (ck(1.0, 0.95, jacobian_alignment_full=0.9, jacobian_erank=1.1), None, "generalising"),
        ({**ck(1.0, 0.95), "adversarial_accuracy": 0.6}, None, "robust"),
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


def test_verdict_with_a_test_split_cites_its_evidence():
    j = judge(ck(1.0, 0.55), n_classes=10, grokked=None, t=T)
    skill = next(e for e in j["evidence"] if e["signal"] == "test_skill")
    assert skill["value"] == pytest.approx(0.5) and skill["threshold"] == T["skill"]
    assert skill["reads"] == "generalising" and not j["inferred"]


def _run(gain, growth, step=500):
    """A step-0 checkpoint and a fitted one whose centred alignment and norm moved by
    exp(gain) and exp(growth) from it."""
    first = ck(0.1, None, step=0, centred_alignment_full=0.01, centred_norm=0.3)
    fitted = ck(1.0, None, step=100)  # fitted long enough ago: step >= settle x 100
    now = ck(1.0, None, step=step, centred_alignment_full=0.01 * math.exp(gain),
             centred_norm=0.3 * math.exp(growth))  # fmt: skip
    return now, [first, fitted]


@pytest.mark.parametrize(
    "gain, growth, expected",
    [
        (0.0, 1.5, "generalising"),  # the visible Jacobian's norm grew less than e^2
        (1.0, 5.0, "uncertain"),  # grown past `growth`: cross-entropy does that to any fit
        (-2.5, 5.0, "memorising"),  # turned away from the inputs, far below random
        (-2.5, 1.5, "uncertain"),  # the signals disagree
        (0.0, 3.0, "uncertain"),  # no signal is not generalising
    ],
)
def test_inferred_verdict_reads_its_signals(gain, growth, expected):
    now, history = _run(gain, growth)
    j = judge(now, n_classes=10, grokked=None, t=T, history=history)
    assert (j["verdict"], j["inferred"]) == (expected, True)
    ev = {e["signal"]: e for e in j["evidence"]}
    assert ev["alignment_gain"]["value"] == pytest.approx(gain)
    assert ev["norm_growth"]["value"] == pytest.approx(growth)
    assert all({"signal", "value", "threshold", "reads"} <= set(e) for e in j["evidence"])


def test_just_fitted_is_too_early_to_tell():
    """Grokking memorises first, with bounded slopes: nothing is read until the network has
    stayed fitted for ``settle`` times the step at which it fitted."""
    now, history = _run(0.0, 1.5, step=250)  # fitted at 100, 250 < 3 x 100
    j = judge(now, n_classes=10, grokked=None, t=T, history=history)
    assert j["verdict"] == "uncertain" and j["evidence"][-1]["signal"] == "steps_since_fit"
    now["step"] = 300
    assert judge(now, n_classes=10, grokked=None, t=T, history=history)["verdict"] == (
        "generalising"
    )


def test_no_step_zero_checkpoint_means_uncertain_not_generalising():
    now, history = _run(0.0, 1.0)
    assert judge(now, n_classes=2, grokked=None, t=T, history=history[1:])["verdict"] == (
        "uncertain"
    )
    history[0]["step"] = 10  # not the initialisation: nothing to compare with
    j = judge(now, n_classes=2, grokked=None, t=T, history=history)
    assert j["verdict"] == "uncertain" and j["evidence"][-1]["reads"].startswith("nothing")
    now["metrics"].pop("centred_norm")  # measured with --metrics fast
    assert signals(now, _run(0, 0)[1])["norm_growth"] is None


def test_centroid_alignment_alone_decides_nothing():
    """The paper's centroid alignment follows the logit sum under cross-entropy (issue 13):
    neither a high nor a negative value is evidence without a test split."""
    for ca in (-0.4, 0.9):
        now, history = _run(0.0, 3.0)
        now["metrics"]["centroid_alignment"] = ca
        assert infer(now, history, T)[0] == "uncertain"


def test_adversarial_accuracy_decides_robust_geometry_alone_does_not():
    e = ck(1.0, 0.95, jacobian_alignment_full=0.9, jacobian_erank=1.1)
    j = judge(e, n_classes=2, grokked=None, t=T)
    assert j["verdict"] == "generalising"
    assert j["evidence"][-1]["reads"].startswith("nothing: not measured")
    e["adversarial_accuracy"] = 0.1
    assert checkpoint_verdict(e, n_classes=2, grokked=None, t=T)[0] == "generalising"
    e["adversarial_accuracy"] = 0.7
    assert checkpoint_verdict(e, n_classes=2, grokked=None, t=T)[0] == "robust"


def test_thresholds_override_and_unknown_key():
    assert thresholds({"fit": 0.9})["fit"] == 0.9
    with pytest.raises(InputError, match="valid: " + ", ".join(DEFAULTS)):
        thresholds({"nope": 1})


def test_rank_order():
    assert rank("learning") < rank("memorising") < rank("generalising") < rank("robust")
    assert rank("diverged") < rank("learning") == rank("uncertain") < rank("memorising")


# ---- recommendations


def traj(trains, tests, verdicts=None, steps=None):
    out = []
    for i, (tr, te) in enumerate(zip(trains, tests, strict=True)):
        e = ck(tr, te, step=(steps or [2**i for i in range(len(trains))])[i])
        e["verdict"] = verdicts[i] if verdicts else _verdict(tr, te)
        out.append(e)
    return out


def _verdict(train, test):
    if test is None:
        return "uncertain" if train >= 0.98 else "learning"
    return checkpoint_verdict(ck(train, test), n_classes=10, grokked=None, t=T)[0]


def _cites_numbers(reason: str) -> bool:
    return bool(re.search(r"\d\.\d{3}", reason))


def test_peak_then_decline_is_stop_at_the_best_step():
    r = recommend(traj([0.5, 0.9, 1.0, 1.0, 1.0, 1.0], [0.5, 0.88, 0.93, 0.85, 0.78, 0.745]),
                  T, n_classes=10)  # fmt: skip
    assert r["action"] == "stop"
    assert "0.930 at step 4" in r["reason"] and "0.745" in r["reason"]


def test_memorising_with_flat_test_accuracy_changes_something_never_keeps_training():
    trains, tests = [0.3, 1.0, 1.0, 1.0, 1.0, 1.0], [0.1, 0.2, 0.2, 0.2, 0.2, 0.2]
    r = recommend(traj(trains, tests), T, n_classes=10, config_train={})
    assert r["action"] == "try-grokalign" and "weight decay" in r["reason"]
    assert "0.200" in r["reason"]
    ga = {"regularisers": [{"name": "grokalign", "lambda": 0.01}]}
    r = recommend(traj(trains, tests), T, n_classes=10, config_train=ga)
    assert r["action"] == "increase-lambda" and "0.01" in r["reason"]


def test_plateau_is_absolute_not_relative():
    # skill over chance but memorising; a tiny change is no rise however large relative to 0
    trains = [1.0] * 6
    tests = [0.280, 0.282, 0.281, 0.283, 0.284, 0.286]  # 10 classes: skill 0.2
    assert recommend(traj(trains, tests), T, n_classes=10)["action"] == "try-grokalign"


def test_test_accuracy_at_chance_while_fitted_is_investigate():
    r = recommend(traj([0.2, 1.0, 1.0, 1.0, 1.0], [0.1, 0.11, 0.1, 0.09, 0.1]), T, n_classes=10)
    assert r["action"] == "investigate" and "chance" in r["reason"]


def test_rising_test_accuracy_is_keep_training():
    trains, tests = [0.5, 1.0, 1.0, 1.0, 1.0, 1.0], [0.1, 0.1, 0.2, 0.4, 0.6, 0.8]
    r = recommend(traj(trains, tests), T, n_classes=10)
    assert r["action"] == "keep-training" and "0.400 at step 8" in r["reason"]
    assert "0.800 at step 32" in r["reason"]


def test_a_rise_that_ended_with_the_fit_is_a_plateau():
    # the last gain came while the network still fitted; since then flat: stop
    trains = [0.5, 0.9, 0.99, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    tests = [0.5, 0.9, 0.95, 0.978, 0.981, 0.981, 0.983, 0.984, 0.985]
    assert recommend(traj(trains, tests), T, n_classes=10)["action"] == "stop"


def test_a_peak_at_chance_is_no_reason_to_stop():
    trains, tests = [0.05, 0.9, 1.0, 1.0, 1.0, 1.0], [0.049, 0.0, 0.0, 0.0, 0.0, 0.0]
    # far below chance (0.000 of 1/23): structured labels the network gets wrong: memorising
    assert recommend(traj(trains, tests), T, n_classes=23)["action"] == "try-grokalign"


def test_generalised_and_flat_is_stop():
    r = recommend(traj([0.5, 1.0, 1.0, 1.0, 1.0], [0.5, 0.96, 0.97, 0.97, 0.97]), T, n_classes=10)
    assert r["action"] == "stop"


def test_fitting_and_underfitting():
    rising = traj([0.1, 0.2, 0.4, 0.6, 0.8], [0.1, 0.2, 0.4, 0.6, 0.8])
    assert recommend(rising, T, n_classes=10)["action"] == "keep-training"
    flat = traj([0.1, 0.6, 0.69, 0.7, 0.7], [0.1, 0.6, 0.69, 0.7, 0.7])
    assert recommend(flat, T, n_classes=10)["action"] == "investigate"


def test_divergence_is_investigate():
    r = recommend(traj([0.1, 0.2, 0.1], [0.1, 0.2, 0.1], ["learning", "learning", "diverged"]), T)
    assert r["action"] == "investigate" and "step 4" in r["reason"]


def test_without_a_test_split_the_inferred_verdict_decides():
    base = [0.2, 1.0, 1.0, 1.0]
    assert recommend(traj(base, [None] * 4), T)["action"] == "investigate"  # uncertain
    mem = traj(base, [None] * 4, ["learning", "memorising", "memorising", "memorising"])
    assert recommend(mem, T)["action"] == "try-grokalign"
    gen = traj(base, [None] * 4, ["learning", "generalising", "generalising", "generalising"])
    assert recommend(gen, T)["action"] == "stop"


@pytest.mark.parametrize(
    "trains, tests",
    [
        ([0.5, 0.9, 1.0, 1.0, 1.0, 1.0], [0.5, 0.88, 0.93, 0.85, 0.78, 0.745]),
        ([0.3, 1.0, 1.0, 1.0, 1.0, 1.0], [0.1, 0.2, 0.2, 0.2, 0.2, 0.2]),
        ([0.2, 1.0, 1.0, 1.0, 1.0, 1.0], [0.1, 0.11, 0.1, 0.09, 0.1, 0.1]),
        ([0.5, 1.0, 1.0, 1.0, 1.0, 1.0], [0.1, 0.1, 0.2, 0.4, 0.6, 0.8]),
        ([0.1, 0.6, 0.69, 0.7, 0.7, 0.7], [0.1, 0.6, 0.69, 0.7, 0.7, 0.7]),
    ],
)
def test_every_reason_cites_its_numbers(trains, tests):
    assert _cites_numbers(recommend(traj(trains, tests), T, n_classes=10)["reason"])


def test_regularisation_is_read_from_the_config():
    # no train section recorded: how the run was trained is unknown, not "no weight decay"
    assert regularisation(None) == {"grokalign": False, "lambda": None, "weight_decay": None}
    cfg = {"optimizer": {"weight_decay": 0.1}, "regularisers": ["grokalign"]}
    # no lambda recorded: none invented (the default depends on the preset trained)
    assert regularisation(cfg) == {"grokalign": True, "lambda": None, "weight_decay": 0.1}
    cfg["regularisers"] = [{"name": "grokalign", "lam": 0.05}]  # the other spelling
    assert regularisation(cfg)["lambda"] == 0.05


@pytest.mark.parametrize(
    "spec, cited",
    [
        ({"name": "grokalign", "lambda": 0.05}, "lambda 0.05"),
        ({"name": "grokalign", "lam": "5e-2"}, "lambda 0.05"),  # YAML 1.1 reads 5e-2 as text
        ("grokalign:lambda=0.05", "lambda 0.05"),
        ("grokalign", "not in the run config"),
        ({"name": "grokalign", "lambda": 0}, "a positive lambda"),
    ],
)
def test_the_lambda_cited_is_the_configs(spec, cited):
    from alignctl.runs.config import _regularisers

    train = {"regularisers": _regularisers([spec], "train.regularisers")}
    trains, tests = [0.3, 1.0, 1.0, 1.0, 1.0, 1.0], [0.1, 0.2, 0.2, 0.2, 0.2, 0.2]
    r = recommend(traj(trains, tests), T, n_classes=10, config_train=train)
    assert r["action"] == "increase-lambda" and cited in r["reason"], r["reason"]
    assert "0.001" not in r["reason"]


@pytest.mark.parametrize(
    "value", ["abc", None, -1, float("nan"), float("inf"), [1], {"a": 1}, True]
)
@pytest.mark.parametrize("key", ["lambda", "lam"])
def test_a_lambda_that_is_not_a_number_is_refused_at_load(key, value):
    from alignctl.runs.config import _regularisers

    with pytest.raises(InputError, match=rf"train.regularisers\[0\]: grokalign: {key} must be"):
        _regularisers([{"name": "grokalign", key: value}], "train.regularisers")


def test_judge_entries_is_judge_in_order_with_the_entries_before_as_history():
    import copy

    from alignctl.report.verdict import judge_entries

    entries = [ck(0.5, None, step=0), ck(1.0, None, step=1, centroid_alignment=0.05),
               ck(1.0, None, step=2, centroid_alignment=0.9, centred_alignment_full=0.5),
               ck(1.0, None, step=3, diverged=True)]  # fmt: skip
    want = copy.deepcopy(entries)
    for i, e in enumerate(want):
        e.update(judge(e, n_classes=3, grokked=None, t=T, history=want[:i]))
    got = copy.deepcopy(entries)
    judge_entries(got, t=T, grokked=None, n_classes=lambda e: 3)
    assert got == want
    # a verdict already given is kept with keep_judged; evidence=False: verdict and inferred
    got = copy.deepcopy(entries)
    got[1]["verdict"] = "robust"
    judge_entries(got, t=T, grokked=None, n_classes=3, keep_judged=True, evidence=False)
    assert got[1]["verdict"] == "robust" and "inferred" not in got[1]
    assert [(e["verdict"], e["inferred"]) for e in got if e is not got[1]] == [
        (e["verdict"], e["inferred"]) for e in want if e is not want[1]
    ] and not any("evidence" in e for e in got)  # fmt: skip


@pytest.mark.parametrize(
    "train, test, verdict, action",
    [
        (0.4, 0.35, "learning", "keep-training"),  # one point: no underfit is "flat" yet
        (0.4, None, "learning", "keep-training"),
        (1.0, 0.95, "generalising", "stop"),
        (1.0, 0.30, "memorising", "try-grokalign"),
        (1.0, 0.10, "memorising", "investigate"),  # 10 classes: test accuracy at chance
        (1.0, None, "memorising", "try-grokalign"),
        (1.0, None, "generalising", "stop"),
        (1.0, None, "uncertain", "investigate"),
    ],
)
def test_one_checkpoint_has_a_verdict_but_no_trend(train, test, verdict, action):
    one = [{**ck(train, test, step=500), "verdict": verdict}]
    r = recommend(one, T, n_classes=10)
    assert r["action"] == action
    # a single point is neither flat nor rising: the reason says so instead
    assert not re.search(r"\b(flat|rising|rises)\b", r["reason"]), r["reason"]
    assert "only checkpoint" in r["reason"] and "step 500" in r["reason"]
    if test is not None:
        assert f"{test:.3f}" in r["reason"]


def test_one_checkpoint_beside_diverged_ones_is_judged_alone():
    two = [{**ck(1.0, 0.95, step=1), "verdict": "generalising"},
           {**ck(1.0, None, step=2, diverged=True), "verdict": "diverged"}]  # fmt: skip
    assert recommend(two, T, n_classes=10)["action"] == "investigate"  # the last diverged
