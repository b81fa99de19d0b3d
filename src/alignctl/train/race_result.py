"""The fields of a saved race result (``alignctl race --json``), checked before ``--render``
shows them: a file edited by hand, or cut from another tool, must not print impossible
numbers (p = -1, 5 of 1 runs grokked, ``yes`` epochs) as a table. Fields a result of an older
version lacks (``test``, ``bound``, ``diverged``) may be absent; unknown fields are ignored."""

from __future__ import annotations

import math

from alignctl.errors import InputError, short
from alignctl.train.race_table import LOGRANK, PAIRED_T

# field -> (lowest, highest, may be null); every one a finite real number, not a bool
_REALS = {"mean_epochs": (0.0, math.inf, False), "std_epochs": (0.0, math.inf, True),
          "speedup": (0.0, math.inf, True), "p_value": (0.0, 1.0, True),
          "mean_seconds": (0.0, math.inf, True),
          "wall_speedup": (0.0, math.inf, True)}  # fmt: skip
_CHOICES = {"test": (None, PAIRED_T, LOGRANK), "bound": (None, "lower", "upper", "unknown"),
            "censored": (True, False)}  # fmt: skip
_TOP = {"seeds": 1, "seed_offset": 0, "max_epochs": 1}  # whole numbers >= these


def _real(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_result(result: dict, path) -> None:
    """InputError naming the first field of ``result`` that no race writes."""

    def bad(where: str, value, want: str) -> InputError:
        return InputError(f"{path}: not a race result ({where} is {short(value)}; {want})")

    for key, low in _TOP.items():
        v = result.get(key, low)
        if not _whole(v) or v < low:
            raise bad(key, v, f"expected a whole number >= {low}")
    for i, row in enumerate(result["rows"]):
        if not isinstance(row, dict):
            raise bad(f"rows[{i}]", row, "expected a mapping")
        if not isinstance(row.get("reg"), str):
            raise bad(f"rows[{i}].reg", row.get("reg"), "expected a name")
        for key, (low, high, nullable) in _REALS.items():
            v = row.get(key)
            if (v is None and not nullable) or (v is not None and not (
                    _real(v) and low <= v <= high)):  # fmt: skip
                raise bad(f"rows[{i}].{key}", v, f"expected a number in [{low:g}, {high:g}]")
        for key, allowed in _CHOICES.items():
            if key in row and row[key] not in allowed:
                shown = ", ".join("null" if a is None else str(a) for a in allowed)
                raise bad(f"rows[{i}].{key}", row[key], f"expected one of {shown}")
        runs = row.get("runs")
        if not _whole(runs) or runs < 1:
            raise bad(f"rows[{i}].runs", runs, "expected a whole number >= 1")
        for key in ("grokked", "diverged"):
            v = row.get(key, 0)
            if not _whole(v) or not 0 <= v <= runs:
                raise bad(f"rows[{i}].{key}", v, f"expected a whole number in [0, {runs}]")
