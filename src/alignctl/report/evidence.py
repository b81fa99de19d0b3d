"""The evidence behind a verdict without a test split: label-free signals of one checkpoint,
each compared with a threshold, and what it reads (memorising, generalising or nothing).

Only signals that held on families of runs they were not chosen on qualify (leave-one-family-
out on the verdict corpus, ``benchmarks/verdict_agreement.py``). The paper's centroid alignment
is not among them: under softmax cross-entropy the centroid mu = J^T 1 is the input gradient of
the logit sum, which the loss cannot see (its logit gradient sums to zero over the classes), so
its sign follows the drift of that sum rather than learning. The signals compare the network
with itself at initialisation (the run's step-0 checkpoint), which makes them comparable
across input dimensions, architectures and losses:

- ``norm_growth``: log(n_t / n_0), n = ``centred_norm`` = |J_c|_F, the norm of the Jacobian the
  softmax sees. Fitting labels that the inputs do not explain takes steep local slopes: on the
  corpus every memorising checkpoint read (see ``settle``) had grown this norm by a factor over
  e^2.75 (random labels: e^3.3 to e^6.6), while networks that fitted with bounded slopes
  (squared error, weight decay, LayerNorm, easy data) generalised. Growth at most ``growth``
  reads ``generalising``. Large growth reads nothing: cross-entropy keeps raising the logits
  (and slopes) of generalising networks too.
- ``alignment_gain``: log(a_t / a_0) - min(0, o), a = ``centred_alignment_full`` =
  |J_c x_hat|^2 / |J_c|_F^2, the share of the visible Jacobian's energy along the input; at
  initialisation it sits near a random direction's. A fall to at most ``no_gain`` (the
  Jacobian turned away from the inputs, far below random) reads ``memorising``. o is the
  entry's ``input_offset`` (:func:`input_offset`), what a common offset of the inputs alone
  takes from a: write x_i = xbar + z_i (xbar the samples' mean); a network with a first-layer
  bias ignores xbar for free (and must, for its units to see the data's variation at all),
  and then J_c xbar = 0, so a_i = |J_c z_i|^2 / (|x_i|^2 |J_c|^2) = a'_i r_i, with a'_i the
  alignment with the centred input z_i and r_i = |z_i|^2 / |x_i|^2: the mean a_t is a'_t times
  a weighted mean of the r_i, whatever the network learned (inputs at +5 or +30 in every
  coordinate: log mean r = -1.8, -5.2; generalising networks' gains -2.0, -5.5). The start
  is not corrected: a random Jacobian does not single out xbar.

Both are read only once the network has stayed fitted for a while: at a step at least
``settle`` times the first step with train accuracy >= ``fit``. Right after fitting, networks
that will generalise often still memorise (grokking's first phase), with bounded slopes.

The start is the run's step-0 checkpoint when it is the initialisation: its step known (not a
checkpoint's position), not diverged, not already fitting the training data (a "step 0" named
after the first epoch has trained). Without one (Lightning and Hugging Face Trainers never save
step 0), ``reference`` stands in: a fresh initialisation of the same model
(:mod:`alignctl.report.reference`). Only ``norm_growth`` reads against it: between two
initialisations of each verdict-corpus architecture ``centred_norm`` moved by |log ratio| <=
0.25 (0.75 for a width-2 network), far inside ``growth``, but ``centred_alignment_full`` by up
to 1.5, as much as ``no_gain`` itself, so ``alignment_gain`` is shown and reads nothing.

Anything else, or signals that disagree, is ``uncertain``: no signal never means generalising.
"""

from __future__ import annotations

import itertools
import math

SIGNALS = ("alignment_gain", "norm_growth")


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _log_ratio(now, then) -> float | None:
    if not (_finite(now) and _finite(then)) or now <= 0 or then <= 0:
        return None
    return math.log(now / then)


INDEX = "checkpoint index"  # alignctl.report.steps.INDEX: a position, not a step


def start(history: list[dict], reference: dict | None = None,
          fit: float = math.inf) -> tuple[dict | None, str | None]:  # fmt: skip
    """(metrics of the run's start, ``"step 0"`` or ``"fresh initialisation"``), or (None, None):
    the first entry when it is the initialisation (see the module docstring), else
    ``reference`` ({"metrics": ...}, :mod:`alignctl.report.reference`) when given."""
    first = history[0] if history else None
    if first is not None and is_start(first, fit):
        return first.get("metrics") or {}, "step 0"  # fmt: skip
    if reference and reference.get("metrics"):
        return reference["metrics"], "fresh initialisation"
    return None, None


def is_start(entry: dict, fit: float = math.inf) -> bool:
    """Whether a run's first entry is its initialisation: step 0 by a known step (not a
    checkpoint's position), not diverged, not already fitting the training data."""
    return (
        entry.get("step") == 0
        and entry.get("step_unit") != INDEX
        and not entry.get("diverged")
        and not (entry.get("train_accuracy") or 0) >= fit
    )


def signals(ck: dict, history: list[dict], reference: dict | None = None,
            fit: float = math.inf) -> dict[str, float | None]:  # fmt: skip
    """The label-free signals of checkpoint ``ck`` given the earlier entries ``history``
    (None where a metric is missing or there is no start to compare with: :func:`start`)."""
    m0, _ = start(history, reference, fit)
    if m0 is None:
        return {s: None for s in SIGNALS}
    m = ck.get("metrics") or {}
    gain = _log_ratio(m.get("centred_alignment_full"), m0.get("centred_alignment_full"))
    return {
        "alignment_gain": None if gain is None else gain - offset_correction(ck),
        "norm_growth": _log_ratio(m.get("centred_norm"), m0.get("centred_norm")),
    }


def input_offset(x) -> float | None:
    """log(mean_i |x_i - xbar|^2 / |x_i|^2) over the samples (rows of ``x``, flattened; float64),
    xbar their mean: the log of the mean share of a sample's squared norm that is not the
    samples' common offset, <= 0 up to sampling (0: centred data; -5.2: every coordinate
    +30 on unit-scale clusters). Samples with x_i = 0 (alignment 0 whatever J is) are left out.
    None for fewer than 2 samples, integer inputs that are token ids (the caller says: pass
    None), or samples that are all alike (no variation to be aligned with)."""
    if x is None or len(x) < 2:
        return None
    x = x.reshape(len(x), -1).double()
    x2 = x.pow(2).sum(-1)
    z2 = (x - x.mean(0)).pow(2).sum(-1)
    keep = x2 > 0
    if not bool(keep.any()):
        return None
    share = float((z2[keep] / x2[keep]).mean())
    return math.log(share) if share > 0 and math.isfinite(share) else None


def offset_correction(ck: dict) -> float:
    """min(0, the entry's ``input_offset``): what :func:`signals` subtracts from the alignment
    gain; 0 without one (an entry measured before it was recorded, token inputs). Never
    positive: the correction can only take memorising reads away, never add one."""
    o = ck.get("input_offset")
    return min(0.0, o) if _finite(o) else 0.0


def _item(signal, value, threshold, reads) -> dict:
    return {"signal": signal, "value": value, "threshold": threshold, "reads": reads}


PINNING = ("mse",)  # losses that pull the outputs to bounded targets


def infer(ck: dict, history: list[dict], t: dict, reference: dict | None = None,
          loss: str | None = None) -> tuple[str, list[dict]]:  # fmt: skip
    """(memorising | generalising | uncertain, evidence) for a fitted checkpoint without a
    test split; ``t`` holds the thresholds ``growth``, ``no_gain``, ``settle`` and ``fit``;
    ``reference``: a fresh initialisation's metrics, used when the run has no step 0;
    ``loss``: the run's recorded training loss (None: unknown). Under squared error
    (``PINNING``) ``norm_growth`` reads nothing: the loss pins the outputs to the targets, so
    the slopes stay bounded whether the network memorises or generalises (memorising
    squared-error runs grew it by e^1.7 to e^1.9, generalising ones of the verdict corpus by
    e^1.65 to e^1.93)."""
    s = signals(ck, history, reference, t["fit"])
    _, kind = start(history, reference, t["fit"])
    gain, growth = s["alignment_gain"], s["norm_growth"]
    # the first fitted step only: a scan that stops there, not a list of the whole run
    before, fitted = None, None
    for h in itertools.chain(history, [ck]):
        if (h.get("train_accuracy") or 0) >= t["fit"]:
            fitted = h["step"]
            break
        before = h["step"]
    if fitted is not None and ck["step"] < t["settle"] * max(fitted, 1):
        # checkpoints bound the fit, they do not date it: say only what they show
        when = (f"fitted already at the first checkpoint, step {fitted}" if before is None else
                f"fitted by step {fitted} (not at step {before})")  # fmt: skip
        why = f"nothing yet: {when}; read from step {t['settle']:g}x {fitted}"
        return "uncertain", [_item("steps_since_fit", ck["step"], t["settle"] * max(fitted, 1),
                                   why)]  # fmt: skip
    if gain is None or growth is None:
        missing = ",".join(k for k, v in s.items() if v is None)
        why = ("nothing: not measured (needs the standard metrics) or no initialisation to "
               "compare with (no step-0 checkpoint, or one that is not the start)")  # fmt: skip
        return "uncertain", [_item(missing, None, None, why)]
    fresh = kind == "fresh initialisation"
    g_reads = "generalising" if growth <= t["growth"] else "nothing"
    if loss in PINNING and g_reads == "generalising":
        g_reads = ("nothing: squared error pins the outputs to the targets, so the growth is "
                   "bounded whether the network memorises or generalises")  # fmt: skip
    a_reads = "memorising" if gain <= t["no_gain"] else "nothing"
    if fresh:  # another initialisation's alignment differs by as much as the threshold
        a_reads = "nothing: compared with a fresh initialisation, not this run's own"
    reads = [r for r in (g_reads, a_reads) if r in ("generalising", "memorising")]
    evidence = [
        _item("norm_growth", growth, t["growth"], g_reads),
        _item("alignment_gain", gain, t["no_gain"], a_reads),
    ]
    if offset_correction(ck) < 0:
        evidence.append(_item("input_offset", ck["input_offset"], None, "subtracted from "
                              "alignment_gain: log mean |x - x_mean|^2/|x|^2 over the samples, "
                              "the alignment a common input offset alone takes away"))  # fmt: skip
    if fresh:
        evidence.append(_item("reference", None, None, "a fresh initialisation of the model: "
                              "the run has no step-0 checkpoint of its start"))  # fmt: skip
    return (reads[0] if len(reads) == 1 else "uncertain"), evidence
