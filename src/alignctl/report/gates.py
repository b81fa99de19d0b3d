"""CI gates on an analysis report: thresholds, baseline comparison, required verdict.

Each gate yields ``{"rule", "value", "threshold", "passed"}`` (a drop from a baseline also
``baseline``, ``drop`` and ``max_drop``; a rise ``baseline``, ``rise`` and ``max_rise``: for
metrics where larger is the regression, e.g. ``jacobian_norm``); the CLI exits 1 when
any fails. Metric names are the report's metrics plus train_accuracy, test_accuracy and
adversarial_accuracy; an unknown name is a usage error (exit 2).
"""

from __future__ import annotations

import math
import operator
import re
from decimal import Decimal

from alignctl.errors import InputError
from alignctl.report.baseline import (
    ACCURACIES,
    baseline_notes,
    baseline_value,
    last_checkpoint,
    load_baseline,
)
from alignctl.report.verdict import ORDER, rank
from alignctl.runs.validate import short

__all__ = ["ACCURACIES", "check_gate_options", "evaluate_gates", "load_baseline"]


# a plain decimal number: Python's float() also takes "1_0" (10), "١" (Arabic-Indic 1) and
# "infinity", which a CI config would only hold by mistake
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def parse_assignment(text: str, option: str) -> tuple[str, float]:
    """``METRIC=VALUE`` with VALUE a finite decimal number (``nan`` would make the gate fail
    whatever the metric, an input error dressed as a failed gate); ``--max-drop``'s DELTA is
    a drop, so at least 0 (a negative one would demand a rise, failing every unchanged run)."""
    name, sep, value = text.partition("=")
    try:
        number = float(value) if sep and name.strip() else None
    except ValueError:
        number = None
    if number is not None and not math.isfinite(number):  # nan, inf, 1e400
        raise InputError(f"{option} {short(text)}: VALUE must be a finite number")
    if number is None or not _NUMBER.fullmatch(value.strip()):
        raise InputError(f"{option} expects METRIC=VALUE, got {short(text)}")
    if option in ("--max-drop", "--max-rise") and number < 0:
        what = option[6:]  # drop / rise
        raise InputError(f"{option} {short(text)}: DELTA is the largest {what} allowed, >= 0")
    if name.strip() in ACCURACIES and not 0 <= number <= 1:
        # the table shows 96.8%: "=90" is a gate nothing passes (or, as a drop, none fails)
        raise InputError(
            f"{option} {short(text)}: accuracies are fractions in [0, 1] (0.9 for 90%)"
        )
    _within_bounds(name.strip(), number, option, text)
    return name.strip(), number


def _within_bounds(name: str, number: float, option: str, text: str) -> None:
    """A threshold outside the metric's declared range (a cosine's [-1, 1]) could only fail
    or never fail, and a drop or rise larger than the range never fails: a CI config mistake,
    not a gate (:attr:`alignctl.geometry.metrics.Metric.bounds`)."""
    from alignctl.geometry.metrics import METRICS

    if name not in METRICS:
        return  # unknown names are reported by value_of, accuracies above
    lo, hi = METRICS.get(name).bounds
    span = f"[{lo:g}, {hi:g}]"
    if option in ("--fail-under", "--fail-over") and not lo <= number <= hi:
        raise InputError(f"{option} {short(text)}: {name} lies in {span}, so this gate could "
                         "only fail or never fail")  # fmt: skip
    if option in ("--max-drop", "--max-rise") and number > hi - lo:
        raise InputError(f"{option} {short(text)}: {name} lies in {span}, so it cannot change "
                         f"by more than {hi - lo:g} and this gate never fails")  # fmt: skip


def _gated(fail_under, fail_over, max_drop, max_rise=()) -> list[tuple[str, str]]:
    """(metric, option) of every threshold, drop and rise gate, each checked for syntax."""
    return [(parse_assignment(text, option)[0], option)
            for texts, option in ((fail_under, "--fail-under"), (fail_over, "--fail-over"),
                                  (max_drop, "--max-drop"), (max_rise, "--max-rise"))
            for text in texts]  # fmt: skip


def _baseline_needed(baseline, max_drop, max_rise) -> None:
    if (max_drop or max_rise) and baseline is None:
        option = "--max-drop" if max_drop else "--max-rise"
        raise InputError(f"{option} needs --baseline REPORT.json")
    if baseline is not None and not (max_drop or max_rise):  # a gate that could never fire
        raise InputError("--baseline is read only by --max-drop / --max-rise METRIC=DELTA "
                         "gates: add one (e.g. --max-drop test_accuracy=0.02) or drop "
                         "--baseline")  # fmt: skip


def check_gate_options(metric_names: list[str], *, fail_under=(), fail_over=(), baseline=None,
                       max_drop=(), require_verdict=None, robustness=None,
                       max_rise=()) -> None:  # fmt: skip
    """Every gate option validated before the analysis: syntax, finite values, known metric
    names, a readable baseline with numbers for the gated metrics, a known verdict. With
    ``robustness=False`` a gate on ``adversarial_accuracy`` is a usage error: nothing measures
    it, so the gate could only fail (exit 1 for a CI config mistake)."""
    known = list(metric_names)
    gated = _gated(fail_under, fail_over, max_drop, max_rise)
    for name, _ in gated:
        value_of({}, name, known)  # InputError for an unknown metric
    _baseline_needed(baseline, max_drop, max_rise)
    if baseline is not None:
        base = last_checkpoint(load_baseline(baseline))
        for name, option in gated:
            if option in ("--max-drop", "--max-rise"):
                baseline_value(base, name, baseline)
    for name, option in gated:  # after the baseline's own message for what it lacks
        if name == "adversarial_accuracy" and robustness is False:
            raise InputError(f"{option} adversarial_accuracy needs --robustness (PGD)")
    if require_verdict is not None and require_verdict not in ORDER:
        raise InputError(f"unknown verdict {short(require_verdict)}; valid: {', '.join(ORDER)}")
    if require_verdict == ORDER[-1] and robustness is False:  # robust needs a measured PGD
        raise InputError(f"--require-verdict {ORDER[-1]} needs --robustness (PGD): without "
                         "a measured adversarial accuracy no run is robust")  # fmt: skip


def value_of(entry: dict, name: str, known: list[str]) -> float | None:
    if name in ACCURACIES:
        return entry.get(name)
    if name not in known:
        from alignctl.geometry.metrics import METRICS

        valid = ", ".join(list(known) + list(ACCURACIES))
        if name in METRICS:  # a real metric, just not among those measured
            raise InputError(
                f"a gate on {name}: it is not measured here (measured: {valid}); "
                f"analysing checkpoints, add it: --metrics standard,{name}"
            )
        raise InputError(f"unknown metric {short(name)} in a gate; valid: {valid}")
    return (entry.get("metrics") or {}).get(name)


def check_measured(report: dict, names: list[str]) -> None:
    """InputError when an accuracy gated is in no checkpoint of the report (the data has no
    test split): the gate could only fail, exit 1 for what no retraining changes."""
    alive = [c for c in report["checkpoints"] if not c.get("diverged")]
    for name in dict.fromkeys(n for n in names if n in ACCURACIES):
        if alive and all(c.get(name) is None for c in alive):
            why = " (the data has no test split)" if name == "test_accuracy" else ""
            raise InputError(f"a gate on {name}: no checkpoint of this run has one{why}")


def _ok(v) -> bool:
    return v is not None and math.isfinite(v)


def exact(x: float) -> str:
    """A threshold as text that reads back as the number compared: ``%g`` when that is
    exact (``0.9``, ``5``), else the shortest round-trip form (``2.2084874037504196``, which
    ``%g`` showed as 2.20849: a rule that a value of 2.208487 passed)."""
    short_form = f"{x:g}"
    return short_form if float(short_form) == x else repr(float(x))


def _decimal(x: float) -> Decimal:
    """The decimal a float is written as (its shortest round-trip form, what JSON holds)."""
    return Decimal(repr(float(x)))


def _change(v: float, b: float, sign: int) -> Decimal:
    """``sign * (v - b)`` on the numbers as written, exactly: in binary, 0.988 - 0.968 is
    0.020000000000000018, so a drop of exactly 0.02 failed ``--max-drop ...=0.02``."""
    return sign * (_decimal(v) - _decimal(b))


def _gate(rule: str, value, threshold, passed: bool) -> dict:
    return {"rule": rule, "value": value, "threshold": threshold, "passed": bool(passed)}


def evaluate_gates(report: dict, *, fail_under=(), fail_over=(), baseline=None, max_drop=(),
                   require_verdict=None, max_rise=()) -> list[dict]:  # fmt: skip
    """Gates on the last checkpoint; validates every rule before judging any. With
    ``max_drop``, what the baseline measured differently is added to ``report["notes"]``."""
    if not report["checkpoints"]:
        raise InputError("no checkpoint to gate on")
    last, known = report["checkpoints"][-1], report.get("metric_names") or []
    check_measured(report, [n for n, _ in _gated(fail_under, fail_over, max_drop, max_rise)])
    gates = []
    for texts, option, op, sign in ((fail_under, "--fail-under", operator.ge, ">="),
                                    (fail_over, "--fail-over", operator.le, "<=")):  # fmt: skip
        for text in texts:
            name, thr = parse_assignment(text, option)
            v = value_of(last, name, known)
            gates.append(_gate(f"{name} {sign} {exact(thr)}", v, thr, _ok(v) and op(v, thr)))
    _baseline_needed(baseline, max_drop, max_rise)
    if baseline is not None:
        gates += _baseline_gates(report, baseline, max_drop, max_rise, known)
    if require_verdict is not None:
        if require_verdict not in ORDER:
            raise InputError(f"unknown verdict {short(require_verdict)}; valid: {', '.join(ORDER)}")
        v = report["verdict"]
        ok = rank(v) >= rank(require_verdict)
        gates.append(_gate(f"verdict at least {require_verdict}", v, require_verdict, ok))
    return gates


def _baseline_gates(report, baseline, max_drop, max_rise, known) -> list[dict]:
    """Drop gates (b - v <= DELTA) and rise gates (v - b <= DELTA) of the last checkpoint
    against the baseline's last (highest-step) checkpoint."""
    whole, last = load_baseline(baseline), report["checkpoints"][-1]
    base = last_checkpoint(whole)
    pairs = [(parse_assignment(t, "--max-drop"), -1) for t in max_drop]
    pairs += [(parse_assignment(t, "--max-rise"), 1) for t in max_rise]
    names = [name for (name, _), _ in pairs]
    notes = report.setdefault("notes", []) if names else []
    notes += [n for n in baseline_notes(report, whole, baseline, names) if n not in notes]
    gates = []
    for (name, delta), sign in pairs:
        v = value_of(last, name, known)
        b = baseline_value(base, name, baseline)
        exact_change = _change(v, b, sign) if _ok(v) and _ok(b) else None  # drop, or rise
        # + 0.0: an unchanged value is a change of 0, not -0 (Decimal keeps the sign of -1 * 0)
        change = None if exact_change is None else float(exact_change) + 0.0
        word = "drop" if sign < 0 else "rise"
        thr = None if not _ok(b) else float(_decimal(b) + sign * _decimal(delta))
        gate = _gate(f"{name} {word} from baseline <= {exact(delta)}", v, thr,
                     exact_change is not None and exact_change <= _decimal(delta))  # fmt: skip
        # the quantity gated is the change: a failure shows it beside the two values
        gate.update({"baseline": b, word: change, f"max_{word}": delta})
        gates.append(gate)
    return gates
