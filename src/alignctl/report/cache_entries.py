"""The shape a cache entry must have to be used (:mod:`alignctl.report.cache`): the report's
checkpoint entry with exactly the requested metrics, finite or null numbers, accuracies in
[0, 1], its notes, class count and input offset; and a kept stand-in reference. Anything else
is recomputed, never trusted."""

from __future__ import annotations

import math


def number_or_none(v, lo=-math.inf, hi=math.inf) -> bool:
    if v is None:
        return True
    return isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi


def valid_entry(e, names: list[str]) -> bool:
    """The report's checkpoint-entry shape, with exactly the requested metrics."""
    if not isinstance(e, dict) or not isinstance(e.get("diverged"), bool):
        return False
    for key in ("metrics", "metrics_std"):
        m = e.get(key)
        if not isinstance(m, dict) or sorted(m) != sorted(names):
            return False
        if not all(number_or_none(v) for v in m.values()):
            return False
    accs = [e.get(k) for k in ("train_accuracy", "test_accuracy", "adversarial_accuracy",
                               "noise_accuracy")]  # fmt: skip
    notes = e.get("_notes")
    if not (isinstance(notes, dict) and sorted(notes) == ["load", "measure"]
            and all(isinstance(v, list) and all(isinstance(t, str) for t in v)
                    for v in notes.values())):  # fmt: skip
        return False
    c = e.get("_classes", "absent")
    if not (c is None or (type(c) is int and c >= 1)):
        return False
    if "input_offset" not in e or not number_or_none(e["input_offset"]):
        return False
    return all(number_or_none(a, 0.0, 1.0) for a in accs) and number_or_none(e.get("seconds"))


def valid_reference(e, names: list[str]) -> bool:
    """A kept stand-in (:mod:`alignctl.report.reference`): None, or finite metrics of
    ``names``."""
    ref = e.get("reference", "absent") if isinstance(e, dict) else "absent"
    if ref is None:
        return True
    m = ref.get("metrics") if isinstance(ref, dict) else None
    return (isinstance(m, dict) and set(m) <= set(names)
            and all(number_or_none(v) and v is not None for v in m.values()))  # fmt: skip
