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

ACCURACIES = ("train_accuracy", "test_accuracy", "adversarial_accuracy")


def parse_assignment(text: str, option: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise InputError(f"{option} expects METRIC=VALUE, got {text!r}") from None


def value_of(entry: dict, name: str, known: list[str]) -> float | None:
    if name in ACCURACIES:
        return entry.get(name)
    if name not in known:
        raise InputError(
            f"unknown metric {name!r} in a gate; valid: {', '.join(list(known) + list(ACCURACIES))}"
        )
    return (entry.get("metrics") or {}).get(name)


def _ok(v) -> bool:
    return v is not None and math.isfinite(v)


def load_baseline(path: Path) -> dict:
    try:
        report = json.loads(Path(path).read_text())
        report["checkpoints"][-1]["metrics"]  # noqa: B018  (shape check)
        return report
    except FileNotFoundError:
        raise InputError(f"baseline report {path} does not exist") from None
    except (ValueError, KeyError, IndexError, TypeError):
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
            b = base.get(name) if name in ACCURACIES else (base.get("metrics") or {}).get(name)
            ok = _ok(v) and _ok(b) and b - v <= delta
            thr = None if b is None else b - delta
            gate = _gate(f"{name} drop from baseline <= {delta:g}", v, thr, ok)
            # the quantity gated is the drop: a failure shows it beside the two values
            gate.update(baseline=b, drop=b - v if _ok(v) and _ok(b) else None, max_drop=delta)
            gates.append(gate)
    if require_verdict is not None:
        if require_verdict not in ORDER:
            raise InputError(f"unknown verdict {require_verdict!r}; valid: {', '.join(ORDER)}")
        v = report["verdict"]
        ok = rank(v) >= rank(require_verdict)
        gates.append(_gate(f"verdict at least {require_verdict}", v, require_verdict, ok))
    return gates
