"""The run's recommendation: one action and a reason that cites its numbers.

Actions: ``keep-training``, ``stop``, ``try-grokalign`` (a run without GrokAlign that
memorises; weight decay is named as the alternative), ``increase-lambda`` (the same for a run
already trained with GrokAlign, read from its config), ``investigate`` (divergence, an
underfit or a run whose test accuracy never leaves chance: look at the data and labels).

With a test split the test-accuracy trajectory decides, in this order (changes are absolute,
over the last third of the checkpoints, and only since the network fitted the training data):

1. diverged at the last checkpoint -> investigate;
2. test accuracy peaked above chance (skill > ``chance_skill``) and has since fallen by
   >= ``decline`` (0.03) -> stop, naming the best step and its accuracy; but investigate
   when train accuracy fell by >= ``decline`` with it (not overfitting: unstable training or
   a model that cannot fit), and not this rule when the test accuracy since the fit is at
   chance (rule 5: a bump before the fit, e.g. the untrained network's, is no model to keep);
3. still fitting (train < ``fit``): train accuracy rising by > ``plateau`` (0.02) ->
   keep-training, else investigate (an underfit);
4. test accuracy rising by > ``plateau`` (0.02), and by > half of it over the second half of
   that window -> keep-training;
5. fitted, the test skill (test - chance) / (1 - chance) never above ``chance_skill``
   (0.05) at any checkpoint since the fit, and the test accuracy at chance (not below half of
   it) ->
   investigate: labels that carry no signal leave no regulariser anything to find;
6. memorising with flat test accuracy -> try-grokalign / increase-lambda (never
   keep-training);
7. generalising or robust with flat test accuracy -> stop.

Without a test split the (inferred) verdicts decide: memorising -> try-grokalign /
increase-lambda; generalising or robust -> stop; uncertain -> investigate (evaluate on held-out
data: the geometry alone does not tell).

One analysable checkpoint has a verdict but no trend: nothing is called flat or rising. Still
fitting -> keep-training; fitted with the test accuracy at chance -> investigate; otherwise the
verdict's action, its reason saying that later checkpoints would show the trend. The same holds
with a test split when only the last checkpoint fits the training data (e.g. two checkpoints,
step 0 and the end): the test accuracy rose with the fit, which is no trend since it.
"""

from __future__ import annotations

import math


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def _third(values: list[float]) -> tuple[float, float]:
    """(value a third of the run before the end, last value)."""
    k = min(max(1, len(values) // 3), len(values) - 1)  # one value: (it, it), no trend
    return values[-1 - k], values[-1]


def recorded_train(config) -> dict | None:
    """``config.train`` when the run's config file had a train section, else None: defaults
    are no record of how a run was trained (a Lightning run with weight decay has none)."""
    return config.train if getattr(config, "train_recorded", True) else None


def regularisation(config_train: dict | None) -> dict:
    """{"grokalign": bool, "lambda": float or None, "weight_decay": float or None} from a run's
    validated ``train`` config (:mod:`alignctl.runs.config`); lambda None: GrokAlign without
    a recorded lambda (a hand-written config: its default depends on the preset trained);
    weight_decay None: no train section recorded (how the run was trained is unknown)."""
    if config_train is None:
        return {"grokalign": False, "lambda": None, "weight_decay": None}
    train = config_train
    used, lam = False, None
    for reg in train.get("regularisers") or []:
        reg = {"name": reg} if isinstance(reg, str) else reg
        if reg.get("name") == "grokalign":
            used, lam = True, reg.get("lambda", reg.get("lam"))
    wd = float((train.get("optimizer") or {}).get("weight_decay") or 0.0)
    return {"grokalign": used, "lambda": None if lam is None else float(lam), "weight_decay": wd}


def _change(reg: dict, why: str) -> dict:
    if reg["grokalign"]:
        lam = reg["lambda"]
        used = "GrokAlign (its lambda is not in the run config)" if lam is None else (
            f"GrokAlign with lambda {lam:g}")  # fmt: skip
        larger = ("a larger lambda" if lam is None else f"a larger lambda (e.g. {10 * lam:g})"
                  if lam > 0 else "a positive lambda (e.g. 0.01, the default)")  # fmt: skip
        return {"action": "increase-lambda", "reason": (
            f"{why}; the run already uses {used}, too weak to induce alignment here: retrain "
            f"with {larger} (paper section 4).")}  # fmt: skip
    wd = reg["weight_decay"]
    alt = ("or use weight decay (the run config does not record how it was trained)"
           if wd is None else "or add weight decay" if wd == 0 else
           f"or raise weight decay above {wd:g}")  # fmt: skip
    return {"action": "try-grokalign", "reason": (
        f"{why}: retrain with GrokAlign, which controls the Jacobian norms that delay alignment "
        f"(paper sections 3.2, 4), {alt}.")}  # fmt: skip


def recommend(checkpoints: list[dict], t: dict, *, n_classes: int | None = None,
              config_train: dict | None = None, chance: float | None = None) -> dict:  # fmt: skip
    """{"action", "reason"} for a run (see the module docstring); ``checkpoints`` are the
    report's entries (verdict, step, accuracies), ``t`` the verdict thresholds,
    ``config_train`` the run config's ``train`` section (its regularisers), ``chance`` the
    test accuracy of a label-blind guess (:func:`alignctl.report.verdict.chance_level`;
    default 1/C)."""
    if not checkpoints:
        return {"action": "investigate", "reason": "no checkpoint could be analysed."}
    last = checkpoints[-1]
    if last["verdict"] == "diverged":
        first = next(c["step"] for c in checkpoints if c["verdict"] == "diverged")
        return {"action": "investigate", "reason": (
            f"the weights or outputs are not finite from step {first} on (last step "
            f"{last['step']}): the run diverged; lower the learning rate or check the data."
        )}  # fmt: skip
    live = [c for c in checkpoints if c["verdict"] != "diverged"]
    if not _finite(last.get("train_accuracy")):  # a monitor's probe without labels
        return {"action": "investigate", "reason": (
            f"no train accuracy at step {last['step']} (data without labels): whether the "
            "network fits, memorises or generalises needs labelled data (the monitor's "
            "probe_y).")}  # fmt: skip
    reg = regularisation(config_train)
    if len(live) == 1:
        return _single(live[0], t, reg, _chance(n_classes, chance))
    tests = [c.get("test_accuracy") for c in live]
    if all(_finite(v) for v in tests):
        return _with_test(live, tests, t, reg, _chance(n_classes, chance))
    return _without_test(live, t, reg)


def _fitting(live: list[dict], t: dict) -> dict:
    trains = [c["train_accuracy"] for c in live if _finite(c.get("train_accuracy"))]
    before, now = _third(trains)
    if now - before > t["plateau"]:
        return {"action": "keep-training", "reason": (
            f"train accuracy is still rising ({before:.3f} -> {now:.3f} over the last third, "
            f"to step {live[-1]['step']}): the network is still fitting the data.")}  # fmt: skip
    return {"action": "investigate", "reason": (
        f"train accuracy is flat at {now:.3f} ({before:.3f} a third of the run earlier), below "
        f"the {t['fit']:.2f} fit threshold: the model underfits; try a larger model or another "
        "learning rate, or check the labels.")}  # fmt: skip


def _skill(acc: float, chance: float) -> float:
    from alignctl.report.verdict import test_skill  # verdict imports this module

    return test_skill(acc, chance)


def _chance(n_classes: int | None, chance: float | None = None) -> float:
    """``chance`` when the caller knows it (the data's, ``verdict.chance_level``), else 1/C."""
    from alignctl.report.verdict import uniform_chance  # verdict imports this module

    return uniform_chance(n_classes) if chance is None else chance


def _single(c: dict, t: dict, reg: dict, chance: float, where: str | None = None) -> dict:
    """The recommendation from one checkpoint: its verdict, and no trend (one point is
    neither flat nor rising); ``where`` says why this checkpoint stands alone."""
    where = where or f"step {c['step']}, the only checkpoint analysed (no trend yet)"
    test = c.get("test_accuracy")
    if c["verdict"] == "learning":
        also = f" (test accuracy {test:.3f})" if _finite(test) else ""
        return {"action": "keep-training", "reason": (
            f"train accuracy {c['train_accuracy']:.3f}{also} at {where}, below the "
            f"{t['fit']:.2f} fit threshold: the network is still fitting; later checkpoints "
            "will show whether it still improves.")}  # fmt: skip
    if _finite(test):
        seen = f"test accuracy {test:.3f} at {where}"
        if (chance >= 1 or _skill(test, chance) <= t["chance_skill"]) and test >= chance / 2:
            return {"action": "investigate", "reason": (
                f"train accuracy {c['train_accuracy']:.3f} but {seen} is at chance "
                f"({chance:.3f}): labels that carry no signal or data that cannot generalise; "
                "check them before regularising.")}  # fmt: skip
    else:
        seen = f"{where}; inferred without a test split"
    if c["verdict"] == "memorising":
        return _change(reg, f"memorising ({seen})")
    if c["verdict"] in ("generalising", "robust"):
        confirm = "later checkpoints" if _finite(test) else "held-out data"
        return {"action": "stop", "reason": (
            f"{c['verdict']} ({seen}): confirm on {confirm} that more training would not "
            "help.")}  # fmt: skip
    return {"action": "investigate", "reason": (
        f"the geometry at {where} does not tell memorising from generalising (verdict "
        f"{c['verdict']}): evaluate on held-out data.")}  # fmt: skip


def _with_test(live, tests, t, reg, chance) -> dict:
    last = live[-1]
    skill = lambda acc: _skill(acc, chance)  # noqa: E731
    best_i = max(range(len(tests)), key=lambda i: (tests[i], -i))
    best, now = tests[best_i], tests[-1]
    fitted = next((i for i, c in enumerate(live) if (c["train_accuracy"] or 0) >= t["fit"]), None)
    # the best test accuracy since the network fitted: a pre-fit bump (an untrained network's
    # lucky guess, a transient while random labels are fitted) is not a model to keep
    best_fit = None if fitted is None else max(tests[fitted:])
    at_chance = best_fit is not None and skill(best_fit) <= t["chance_skill"] and now >= chance / 2
    if best - now >= t["decline"] and skill(best) > t["chance_skill"] and not at_chance:
        was, train_now = live[best_i]["train_accuracy"], last["train_accuracy"]
        if _finite(was) and was - train_now >= t["decline"]:  # both fell: not overfitting
            return {"action": "investigate", "reason": (
                f"test accuracy fell from {best:.3f} at step {live[best_i]['step']} to "
                f"{now:.3f} at step {last['step']}, and train accuracy fell with it ({was:.3f} "
                f"-> {train_now:.3f}): not overfitting but unstable training or a model that "
                "cannot fit; lower the learning rate or check the model and data.")}  # fmt: skip
        return {"action": "stop", "reason": (
            f"test accuracy peaked at {best:.3f} at step {live[best_i]['step']} and has fallen "
            f"to {now:.3f} at step {last['step']}: keep the step-{live[best_i]['step']} "
            "checkpoint; further training overfits.")}  # fmt: skip
    if last["verdict"] == "learning":
        return _fitting(live, t)
    # the trend since a third of the run before the end, but never from before the fit (how
    # fast the network fitted says nothing about whether it still generalises more), and
    # still there in the second half of that window (not the tail of the fit)
    if fitted == len(live) - 1:  # every change so far came with the fit: no trend since it
        prev = live[-2]["train_accuracy"]
        was = f"; train accuracy {prev:.3f} at step {live[-2]['step']}" if _finite(prev) else ""
        return _single(last, t, reg, chance, where=(
            f"step {last['step']} (the first checkpoint that fits the training data{was}: no "
            "trend since the fit yet)"))  # fmt: skip
    start = max(len(tests) - 1 - max(1, len(tests) // 3), fitted)
    mid = (start + len(tests) - 1) // 2
    before = tests[start]
    if now - before > t["plateau"] and now - tests[mid] > t["plateau"] / 2:
        seen = [i for i in dict.fromkeys((start, mid)) if i != len(tests) - 1]
        points = ", ".join(f"{tests[i]:.3f} at step {live[i]['step']}" for i in seen)
        return {"action": "keep-training", "reason": (
            f"{last['verdict']}, and test accuracy is still rising ({points}, {now:.3f} "
            f"at step {last['step']}).")}  # fmt: skip
    flat = f"test accuracy flat at {now:.3f} ({before:.3f} at step {live[start]['step']})"
    # at chance: the labels carry nothing the network can use (shuffled labels) -- unlike a
    # test accuracy far BELOW chance (modular addition memorised: 0.000 of 1/p), which says the
    # held-out labels are structured and the network systematically gets them wrong
    if at_chance:
        early = (f"; its {best:.3f} at step {live[best_i]['step']}, before the fit, did not last"
                 if best_i < fitted and skill(best) > t["chance_skill"] else "")  # fmt: skip
        return {
            "action": "investigate",
            "reason": (
                f"train accuracy {last['train_accuracy']:.3f} but test accuracy never left chance "
                f"since the fit at step {live[fitted]['step']} ({chance:.3f}; best {best_fit:.3f}, "
                f"skill {skill(best_fit):.2f}{early}): labels that carry no signal (shuffled, "
                "mismatched) or data that cannot generalise; check them before regularising."
            ),
        }
    if last["verdict"] == "memorising":
        return _change(reg, f"memorising with {flat}")
    return {"action": "stop", "reason": (
        f"{last['verdict']} with {flat}: more training will not help.")}  # fmt: skip


def _without_test(live, t, reg) -> dict:
    last = live[-1]
    if last["verdict"] == "learning":
        return _fitting(live, t)
    if last["verdict"] == "memorising":
        return _change(reg, "memorising (inferred without a test split)")
    if last["verdict"] in ("generalising", "robust"):
        return {"action": "stop", "reason": (
            f"{last['verdict']} (inferred without a test split) at step {last['step']}: "
            "confirm on held-out data.")}  # fmt: skip
    return {"action": "investigate", "reason": (
        f"no test split, and the geometry at step {last['step']} does not tell memorising from "
        "generalising (verdict uncertain): evaluate on held-out data.")}  # fmt: skip
