"""The evidence behind a verdict without a test split: label-free signals of one checkpoint,
each compared with a threshold, and what it reads (memorising, generalising or nothing).

Only signals that held on families of runs they were not chosen on qualify (leave-one-family-
out on the verdict corpus, ``benchmarks/verdict_agreement.py``). The paper's centroid alignment
is not among them: under softmax cross-entropy the centroid mu = J^T 1 is the input gradient of
the logit sum, which the loss cannot see (its logit gradient sums to zero over the classes), so
its sign follows the drift of that sum rather than learning. The signals here are relative to
the same network at initialisation (the run's first checkpoint, when it is step 0), which makes
them comparable across input dimensions, architectures and losses:

- ``alignment_gain``: log(a_t / a_0) with a = ``centred_alignment_full``, the share of the
  softmax-visible Jacobian's energy along x (|J_c x_hat|^2 / |J_c|_F^2). At initialisation it
  sits near the value of a random direction; a network whose visible Jacobian has turned toward
  its inputs has learnt input-aligned features (paper sections 2.3, 3.1), one that memorises
  keeps it at, or pushes it below, its random level.
- ``norm_growth``: log(n_t / n_0) with n = ``centred_norm`` = |J_c|_F: memorisation fits
  each point with steep local slopes, so the visible Jacobian's norm grows by orders of
  magnitude (section 3.2: norms that grow instead of aligning).

Reads: ``generalising`` when the gain is at least ``gain`` and the growth at most
``growth``; ``memorising`` when the gain is at most ``no_gain`` or the growth at least
``blowup``; anything else, or signals that disagree, is ``uncertain``: no signal never means
generalising.
"""

from __future__ import annotations

import math

SIGNALS = ("alignment_gain", "norm_growth")


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _log_ratio(now, then) -> float | None:
    if not (_finite(now) and _finite(then)) or now <= 0 or then <= 0:
        return None
    return math.log(now / then)


def signals(ck: dict, history: list[dict]) -> dict[str, float | None]:
    """The label-free signals of checkpoint ``ck`` given the earlier entries ``history``
    (None where a metric is missing or the run has no step-0 checkpoint)."""
    first = history[0] if history else None
    if first is None or first.get("step") != 0 or first.get("diverged"):
        return {s: None for s in SIGNALS}
    m, m0 = ck.get("metrics") or {}, first.get("metrics") or {}
    return {
        "alignment_gain": _log_ratio(
            m.get("centred_alignment_full"), m0.get("centred_alignment_full")
        ),
        "norm_growth": _log_ratio(m.get("centred_norm"), m0.get("centred_norm")),
    }


def _item(signal, value, threshold, reads) -> dict:
    return {"signal": signal, "value": value, "threshold": threshold, "reads": reads}


def infer(ck: dict, history: list[dict], t: dict) -> tuple[str, list[dict]]:
    """(memorising | generalising | uncertain, evidence) for a fitted checkpoint without a
    test split; ``t`` holds the thresholds ``gain``, ``no_gain``, ``growth``, ``blowup``."""
    s = signals(ck, history)
    gain, growth = s["alignment_gain"], s["norm_growth"]
    evidence = []
    if gain is None or growth is None:
        missing = [k for k, v in s.items() if v is None]
        evidence.append(_item(",".join(missing), None, None, "nothing: not measured, or no "
                              "step-0 checkpoint to compare with"))  # fmt: skip
        return "uncertain", evidence
    reads = []
    if gain >= t["gain"]:
        evidence.append(_item("alignment_gain", gain, t["gain"], "generalising"))
        reads.append("generalising")
    elif gain <= t["no_gain"]:
        evidence.append(_item("alignment_gain", gain, t["no_gain"], "memorising"))
        reads.append("memorising")
    else:
        evidence.append(_item("alignment_gain", gain, [t["no_gain"], t["gain"]], "nothing"))
    if growth >= t["blowup"]:
        evidence.append(_item("norm_growth", growth, t["blowup"], "memorising"))
        reads.append("memorising")
    elif growth <= t["growth"]:
        evidence.append(_item("norm_growth", growth, t["growth"], "generalising"))
    else:
        evidence.append(_item("norm_growth", growth, [t["growth"], t["blowup"]], "nothing"))
        if "generalising" in reads:  # alignment without bounded norms is not enough
            reads.remove("generalising")
    if len(set(reads)) == 1:
        return reads[0], evidence
    return "uncertain", evidence
