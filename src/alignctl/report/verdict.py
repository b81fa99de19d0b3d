"""Verdicts per checkpoint and the run's recommendation (paper sections 3-4).

Verdicts, in the order training moves through them:
``learning`` < ``memorising`` < ``generalising`` < ``robust``; ``diverged`` stands apart.

- diverged: non-finite weights or outputs.
- learning: train accuracy below ``fit`` (default 0.98).
- with a test split: generalising when the task's grokked criterion holds (built-in tasks,
  SETUPS.md), else when the test accuracy's skill over chance,
  (test - 1/C) / (1 - 1/C), reaches ``skill`` (default 0.5), so a hard data set with honest
  test accuracy is not called memorising; otherwise memorising.
- without a test split (inferred, marked so), from the paper's intrinsic signal, centroid
  alignment (section 3.1): memorising shows as centroids pushed away from their inputs once
  the data is fitted (mean alignment dipping below ``-dip``, default 0.1) that have not yet
  recovered ``recovery`` (0.85) of that dip; a fitted network without such a dip, or with
  alignment >= ``centroid_alignment`` (0.5), is generalising. On sparse parity the recovery
  tracks the test accuracy; with GrokAlign no dip appears.
- robust: generalising, with mean jacobian_alignment_full >= ``alignment_full`` (0.5) and
  mean jacobian_erank <= ``erank`` (1.5) (section 3.2: rank-one Jacobians aligned with x),
  and, when measured, adversarial accuracy >= ``adversarial`` (0.5).
Every threshold can be overridden by the config's ``verdict:`` section.
"""

from __future__ import annotations

import math

from alignctl.errors import InputError

ORDER = ("learning", "memorising", "generalising", "robust")
DEFAULTS = {
    "fit": 0.98,
    "skill": 0.5,
    "centroid_alignment": 0.5,
    "alignment_full": 0.5,
    "erank": 1.5,
    "adversarial": 0.5,
    "dip": 0.1,
    "recovery": 0.85,
    "plateau": 0.02,
    "collapse": 0.5,
}


def thresholds(overrides: dict | None) -> dict:
    t = dict(DEFAULTS)
    for k, v in (overrides or {}).items():
        if k not in DEFAULTS:
            raise InputError(f"unknown verdict threshold {k!r}; valid: {', '.join(DEFAULTS)}")
        t[k] = float(v)
    return t


def rank(verdict: str) -> int:
    """Position in learning < memorising < generalising < robust; diverged is -1."""
    return ORDER.index(verdict) if verdict in ORDER else -1


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def _aligned_without_labels(ca, history: list[dict], t: dict) -> bool:
    """The inferred generalisation test: no unrecovered dip of centroid alignment after
    fitting, or high alignment."""
    if not _finite(ca):
        return False
    if ca >= t["centroid_alignment"]:
        return True
    fitted = [h["metrics"].get("centroid_alignment") for h in history
              if _finite(h.get("train_accuracy")) and h["train_accuracy"] >= t["fit"]]  # fmt: skip
    dip = min([v for v in fitted if _finite(v)] + [ca])
    return dip > -t["dip"] or ca - dip >= t["recovery"] * -dip


def checkpoint_verdict(ck: dict, *, n_classes: int, grokked: dict | None, t: dict,
                       history: list[dict] | None = None) -> tuple[str, bool]:  # fmt: skip
    """(verdict, inferred) for one checkpoint entry of a report (metrics = means);
    ``history`` holds the earlier checkpoints' entries (for the inferred verdict)."""
    m = ck.get("metrics") or {}
    if ck.get("diverged"):
        return "diverged", False
    train, test = ck.get("train_accuracy"), ck.get("test_accuracy")
    if not _finite(train) or train < t["fit"]:
        return "learning", False
    inferred = test is None
    if inferred:
        general = _aligned_without_labels(m.get("centroid_alignment"), history or [], t)
    elif grokked and any(grokked.get(k) is not None for k in ("test_acc", "noise_acc")):
        general = test > (grokked.get("test_acc") or 0.0)
        noise = ck.get("noise_accuracy")
        if grokked.get("noise_acc") is not None and noise is not None:
            general = general and noise > grokked["noise_acc"]
    else:
        chance = 0.5 if n_classes <= 2 else 1.0 / n_classes
        general = (test - chance) / (1 - chance) >= t["skill"]
    if not general:
        return "memorising", inferred
    af, er = m.get("jacobian_alignment_full"), m.get("jacobian_erank")
    robust = _finite(af) and _finite(er) and af >= t["alignment_full"] and er <= t["erank"]
    adv = ck.get("adversarial_accuracy")
    if robust and adv is not None:
        robust = adv >= t["adversarial"]
    return ("robust" if robust else "generalising"), inferred


def _trend(values: list[float]) -> tuple[float, float]:
    """(change over the last third of the run, relative change), on finite values."""
    vals = [v for v in values if _finite(v)]
    if len(vals) < 2:
        return 0.0, 0.0
    k = max(1, len(vals) // 3)
    change = vals[-1] - vals[-1 - k]
    return change, abs(change) / max(abs(vals[-1 - k]), 1e-12)


def recommend(checkpoints: list[dict], t: dict) -> dict:
    """The run's action (keep-training | stop | try-grokalign | investigate) and one sentence
    with the numbers behind it, from the trajectory (paper sections 3.2 and 4.3)."""
    if not checkpoints:
        return {"action": "investigate", "reason": "no checkpoint could be analysed."}
    last = checkpoints[-1]
    if last["verdict"] == "diverged":
        return {
            "action": "investigate",
            "reason": f"the weights or outputs at step {last['step']} are not finite.",
        }
    series = lambda k: [c["metrics"].get(k) for c in checkpoints if c["verdict"] != "diverged"]  # noqa: E731
    ca, norm = series("centroid_alignment"), series("centroid_norm")
    fin = [v for v in ca if _finite(v)]
    if not fin:
        return {"action": "investigate", "reason": "no finite centroid alignment was measured."}
    change, rel = _trend(ca)
    peak, now = max(fin), fin[-1]
    if peak > 0.2 and now < t["collapse"] * peak:
        return {"action": "investigate", "reason": (
            f"centroid alignment collapsed from {peak:.3f} to {now:.3f}: the network is "
            "un-aligning (as under Grok(Un)Align, paper appendix B).")}  # fmt: skip
    rising = change > 0 and rel > t["plateau"]
    verdict = last["verdict"]
    if verdict == "robust" and not rising:
        return {"action": "stop", "reason": (
            f"robust, and centroid alignment has plateaued at {now:.3f} "
            f"({rel:.1%} change over the last third): more training will not help.")}  # fmt: skip
    if rising:
        return {"action": "keep-training", "reason": (
            f"{verdict}, and centroid alignment is still rising ({now - change:.3f} -> {now:.3f} "
            "over the last third): more training will help (paper section 3.2).")}  # fmt: skip
    if verdict == "learning":
        acc = last.get("train_accuracy")
        return {
            "action": "keep-training",
            "reason": f"train accuracy is {acc:.1%}; the network is still fitting the data.",
        }
    nchange, nrel = _trend(norm)
    if verdict == "memorising":
        if nchange > 0 and nrel > t["plateau"]:
            return {"action": "try-grokalign", "reason": (
                f"memorising: centroid norms grow ({nrel:.0%} over the last third) while alignment "
                f"is flat at {now:.3f}, so the network raises inner products instead of aligning; "
                "GrokAlign targets exactly this (paper section 4).")}  # fmt: skip
        return {"action": "try-grokalign", "reason": (
            f"memorising with centroid alignment flat at {now:.3f}: GrokAlign induces the "
            "alignment that precedes generalisation (paper section 4).")}  # fmt: skip
    af = last["metrics"].get("jacobian_alignment_full")
    return {"action": "stop" if verdict == "generalising" else "keep-training", "reason": (
        f"generalising with alignment flat at {now:.3f}; Jacobian alignment is "
        f"{af if af is None else round(af, 3)}: for robustness as well, retrain with GrokAlign "
        "(paper section 4.3).")}  # fmt: skip
