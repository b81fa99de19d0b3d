"""CI gates on an analysis report: thresholds, baseline comparison, required verdict.

Each gate yields ``{"rule", "value", "threshold", "passed"}`` (a drop from a baseline also
``baseline``, ``drop`` and ``max_drop``); the CLI exits 1 when
any fails. Metric names are the report's metrics plus train_accuracy, test_accuracy and
adversarial_accuracy; an unknown name is a usage error (exit 2).
"""

from __future__ import annotations

import json
import math
import operator
from pathlib import Path

from alignctl.errors import InputError
from alignctl.report.verdict import ORDER, rank
from alignctl.runs.validate import short

ACCURACIES = ("train_accuracy", "test_accuracy", "adversarial_accuracy")


def parse_assignment(text: str, option: str) -> tuple[str, float]:
    """``METRIC=VALUE`` with a finite VALUE (``nan`` would make the gate fail whatever the
    metric, an input error dressed as a failed gate)."""
    name, sep, value = text.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError
        number = float(value)
    except ValueError:
        raise InputError(f"{option} expects METRIC=VALUE, got {short(text)}") from None
    if not math.isfinite(number):
        raise InputError(f"{option} {short(text)}: VALUE must be a finite number")
    return name.strip(), number


def check_gate_options(metric_names: list[str], *, fail_under=(), fail_over=(), baseline=None,
                       max_drop=(), require_verdict=None) -> None:  # fmt: skip
    """Every gate option validated before the analysis: syntax, finite values, known metric
    names, a readable baseline with numbers for the gated metrics, a known verdict."""
    known = list(metric_names)
    for texts, option in ((fail_under, "--fail-under"), (fail_over, "--fail-over"),
                          (max_drop, "--max-drop")):  # fmt: skip
        for text in texts:
            name, _ = parse_assignment(text, option)
            value_of({}, name, known)  # InputError for an unknown metric
    if max_drop and baseline is None:
        raise InputError("--max-drop needs --baseline REPORT.json")
    if baseline is not None:
        base = load_baseline(baseline)["checkpoints"][-1]
        for text in max_drop:
            name, _ = parse_assignment(text, "--max-drop")
            _baseline_value(base, name, baseline)
    if require_verdict is not None and require_verdict not in ORDER:
        raise InputError(f"unknown verdict {short(require_verdict)}; valid: {', '.join(ORDER)}")


def _baseline_value(base: dict, name: str, path) -> float | None:
    """The baseline's last value of ``name``: a number or null (an InputError otherwise)."""
    b = base.get(name) if name in ACCURACIES else (base.get("metrics") or {}).get(name)
    if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float))):
        raise InputError(f"baseline {path}: {name} is {short(b)}, not a number")
    return b


def value_of(entry: dict, name: str, known: list[str]) -> float | None:
    if name in ACCURACIES:
        return entry.get(name)
    if name not in known:
        raise InputError(
            f"unknown metric {short(name)} in a gate; "
            f"valid: {', '.join(list(known) + list(ACCURACIES))}"
        )
    return (entry.get("metrics") or {}).get(name)


def _ok(v) -> bool:
    return v is not None and math.isfinite(v)


MAX_BASELINE_BYTES = 64 << 20  # a report is kilobytes; more is not one


def load_baseline(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError(f"baseline report {path} does not exist")
    if not path.is_file():
        raise InputError(f"baseline report {path} is not a regular file")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BASELINE_BYTES + 1)
        if len(data) > MAX_BASELINE_BYTES:
            raise ValueError
        report = json.loads(data)
        last = report["checkpoints"][-1]
        if not isinstance(last, dict) or not isinstance(last["metrics"], dict):
            raise TypeError
        return report
    except OSError as e:
        raise InputError(f"baseline report {path}: cannot read: {e.strerror or e}") from None
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        raise InputError(f"{path} is not an alignctl analyze JSON report") from None


def _gate(rule: str, value, threshold, passed: bool) -> dict:
    return {"rule": rule, "value": value, "threshold": threshold, "passed": bool(passed)}


def evaluate_gates(report: dict, *, fail_under=(), fail_over=(), baseline=None, max_drop=(),
                   require_verdict=None) -> list[dict]:  # fmt: skip
    """Gates on the last checkpoint; validates every rule before judging any."""
    if not report["checkpoints"]:
        raise InputError("no checkpoint to gate on")
    last, known = report["checkpoints"][-1], report.get("metric_names") or []
    gates = []
    for texts, option, op, sign in ((fail_under, "--fail-under", operator.ge, ">="),
                                    (fail_over, "--fail-over", operator.le, "<=")):  # fmt: skip
        for text in texts:
            name, thr = parse_assignment(text, option)
            v = value_of(last, name, known)
            gates.append(_gate(f"{name} {sign} {thr:g}", v, thr, _ok(v) and op(v, thr)))
    if max_drop and baseline is None:
        raise InputError("--max-drop needs --baseline REPORT.json")
    if baseline is not None:
        base = load_baseline(baseline)["checkpoints"][-1]
        for text in max_drop:
            name, delta = parse_assignment(text, "--max-drop")
            v = value_of(last, name, known)
            b = _baseline_value(base, name, baseline)
            ok = _ok(v) and _ok(b) and b - v <= delta
            thr = None if b is None else b - delta
            gate = _gate(f"{name} drop from baseline <= {delta:g}", v, thr, ok)
            # the quantity gated is the drop: a failure shows it beside the two values
            gate.update(baseline=b, drop=b - v if _ok(v) and _ok(b) else None, max_drop=delta)
            gates.append(gate)
    if require_verdict is not None:
        if require_verdict not in ORDER:
            raise InputError(f"unknown verdict {short(require_verdict)}; valid: {', '.join(ORDER)}")
        v = report["verdict"]
        ok = rank(v) >= rank(require_verdict)
        gates.append(_gate(f"verdict at least {require_verdict}", v, require_verdict, ok))
    return gates
