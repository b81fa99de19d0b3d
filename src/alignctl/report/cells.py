"""From report values to cell text: one rule for every renderer (table, Markdown, CSV).

A report is read defensively: a renderer must render any dict a report can hold (missing or
extra keys, None, NaN and infinities, strings such as verdicts, booleans, ints, names with
control characters), so every lookup goes through :func:`field` and every value through
:func:`num`, :func:`pct` or :func:`clean`. Values are never changed, only shown.
"""

from __future__ import annotations

import math
import numbers
import unicodedata

# metric -> short header (the table's columns, in display order)
HEADERS = {
    "centroid_alignment": "cent. align",
    "jacobian_alignment": "jac. align",
    "jacobian_alignment_full": "jac. align full",
    "centroid_norm": "|mu|",
    "jacobian_norm": "|J|_F",
    "jacobian_pc1": "PC1",
    "jacobian_erank": "erank",
}
ACCURACIES = {  # key -> header; adversarial and noise accuracy only when measured
    "train_accuracy": "train acc",
    "test_accuracy": "test acc",
    "adversarial_accuracy": "adv. acc",
    "noise_accuracy": "noise acc",
}
_INVISIBLE = {"Cc", "Cs", "Zl", "Zp"}  # control chars, lone surrogates, line/paragraph breaks
# bidirectional embeddings, overrides, isolates and marks: a run name holding one reorders the
# rest of the line it is printed on (a title, a table row), as the CLI's printable() escapes
_BIDI = {0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def field(d, key, default=None):
    """``d[key]`` when ``d`` is a dict holding it, else ``default``."""
    return d.get(key, default) if isinstance(d, dict) else default


def checkpoints(report) -> list[dict]:
    cks = field(report, "checkpoints")
    return [c if isinstance(c, dict) else {} for c in cks] if isinstance(cks, list) else []


def metric_names(report) -> list[str]:
    """The report's ``metric_names``; when absent, every metric its checkpoints hold."""
    names = field(report, "metric_names")
    if not isinstance(names, (list, tuple)):
        held = (field(ck, "metrics") for ck in checkpoints(report))
        names = [k for m in held if isinstance(m, dict) for k in m]  # not a dict: no names
    return list(dict.fromkeys(n for n in names if isinstance(n, str)))


def metric(ck: dict, name: str):
    m = field(ck, "metrics")
    return m.get(name) if isinstance(m, dict) else None


def clean(text) -> str:
    """One line of visible text: control characters, lone surrogates, line breaks and
    bidirectional controls (U+200E/F, U+202A-E, U+2066-9) become
    ``\\xNN`` / ``\\uNNNN`` escapes; runs of whitespace become one space, none at the ends."""
    out = []
    for ch in str(text):
        if unicodedata.category(ch) in _INVISIBLE or ord(ch) in _BIDI:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return " ".join("".join(out).split())


def is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def num(v, digits: int = 4) -> str:
    """A value as text: ``digits`` significant digits for reals, ``nan``/``inf``, ``-`` for
    None, ``yes``/``no`` for booleans, anything else as clean text."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if is_real(v):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}g}"
    return clean(v)


def pct(v) -> str:
    """An accuracy in [0, 1] as a percentage; any other value as :func:`num` shows it."""
    if is_real(v) and 0 <= float(v) <= 1:
        return f"{float(v):.1%}"
    return num(v)


def step(ck: dict) -> str:
    return num(field(ck, "step"))


def verdict(ck: dict) -> str:
    v, inferred = field(ck, "verdict"), field(ck, "inferred") is True
    return ("-" if v is None else clean(v)) + (" (inferred)" if inferred else "")


def accuracy_keys(report, wide: bool = False) -> list[str]:
    """train and test accuracy always; adversarial and noise accuracy when any checkpoint has
    them (noise accuracy only in wide tables and files)."""
    keys = ["train_accuracy", "test_accuracy"]
    cks = checkpoints(report)
    for k in ("adversarial_accuracy", "noise_accuracy"):
        if (wide or k == "adversarial_accuracy") and any(field(c, k) is not None for c in cks):
            keys.append(k)
    return keys


def metric_columns(report, wide: bool = False) -> list[tuple[str, str]]:
    """(metric, header): the table's metrics the report holds, in table order; ``wide`` adds
    every other metric of the report under its own name."""
    names = metric_names(report)
    cols = [(k, h) for k, h in HEADERS.items() if k in names]
    if wide:
        cols += [(n, clean(n)) for n in names if n not in HEADERS]
    return cols


def step_unit(report) -> str | None:
    unit = field(report, "step_unit")
    return clean(unit) if isinstance(unit, str) and unit.strip() else None


def gate_text(g) -> str:
    """A gate as one line: the rule, the value gated and, for a drop from a baseline, the
    baseline value and the drop (so a failure shows the quantity that failed)."""
    rule = clean(field(g, "rule", "?"))
    # a drop gate shows its baseline even when null (its last checkpoint diverged, or had
    # no test split): "value 2.2" alone would not say why the gate failed
    change = "rise" if any(field(g, k) is not None for k in ("rise", "max_rise")) else "drop"
    if change == "rise" or any(field(g, k) is not None for k in ("drop", "baseline", "max_drop")):
        digits = _digits(field(g, change), field(g, f"max_{change}"))
        parts = [("value", field(g, "value")), ("baseline", field(g, "baseline")),
                 (change, field(g, change))]  # fmt: skip
    else:
        digits = _digits(field(g, "value"), field(g, "threshold"))
        parts = [("value", field(g, "value"))]
        if field(g, "threshold") is not None:
            parts.append(("threshold", field(g, "threshold")))
    return f"{rule}: " + ", ".join(f"{k} {num(v, digits)}" for k, v in parts)


def _digits(a, b) -> int:
    """Significant digits that tell the gated quantity from its limit: 4, or as many as make
    two different numbers read differently ("value 2.208, threshold 2.208" explained no
    failure; 2.208487 vs 2.20849 does)."""
    if not (is_real(a) and is_real(b)) or float(a) == float(b):
        return 4
    a, b = float(a), float(b)
    return next((p for p in range(4, 17) if f"{a:.{p}g}" != f"{b:.{p}g}"), 17)


def gate_passed(g) -> bool:
    return field(g, "passed") is True


def gates(report) -> list:
    g = field(report, "gates")
    return list(g) if isinstance(g, list) else []
