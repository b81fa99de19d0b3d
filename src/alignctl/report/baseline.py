"""The baseline report of ``--max-drop``: read strictly, each gated value found or refused.

A baseline is another ``alignctl analyze --json`` report (usually main's nightly one). It is
input: a file that is not strict JSON (alignctl never writes ``NaN``/``Infinity``), holds no
checkpoint, or lacks a gated value (measured with another metric set, or without
``--robustness``) is an :class:`InputError` (exit 2), never a failed gate (exit 1), which
would report a regression that nobody can act on. A value the baseline holds as ``null`` (its
last checkpoint diverged, or had no test split) is data: that gate fails, saying so. Where
the two reports were measured differently (another split, sample count, data, weights,
output, PGD attack or alignctl version), :func:`baseline_notes` says so; the comparison still
runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from alignctl.errors import InputError
from alignctl.runs.limits import json_int
from alignctl.runs.validate import short

__all__ = ["ACCURACIES", "baseline_notes", "baseline_value", "last_checkpoint", "load_baseline"]

ACCURACIES = ("train_accuracy", "test_accuracy", "adversarial_accuracy")
MAX_BASELINE_BYTES = 64 << 20  # a report is kilobytes; more is not one


def _no_constant(token: str):
    # Python's json.dump writes NaN by default: say so, and what alignctl writes instead
    raise ValueError(f"{token} is not JSON (alignctl writes null for a missing value)")


def load_baseline(path: Path) -> dict:
    """The report at ``path``: strict JSON whose last checkpoint is a mapping with metrics."""
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
        report = json.loads(data, parse_constant=_no_constant, parse_int=json_int)  # UTF-8/16/32
        last = last_checkpoint(report)
        if not isinstance(last, dict) or not isinstance(last["metrics"], dict):
            raise TypeError
        return report
    except OSError as e:
        raise InputError(f"baseline report {path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise InputError(f"baseline report {path} is not UTF-8 text") from None
    except json.JSONDecodeError as e:  # says where: a hand edit, or another tool's NaN
        raise InputError(f"baseline report {path} is not strict JSON: {e.msg} (line "
                         f"{e.lineno}, column {e.colno})") from None  # fmt: skip
    except (ValueError, KeyError, IndexError, TypeError, RecursionError) as e:
        what = f": {e}" if isinstance(e, ValueError) and "JSON" in str(e) else ""
        raise InputError(f"{path} is not an alignctl analyze JSON report{what}") from None


def last_checkpoint(report: dict) -> dict:
    """The checkpoint with the highest step (the list's last among equals): alignctl writes
    them in step order, a hand-edited or merged baseline need not be."""
    entries = report["checkpoints"]
    if not isinstance(entries, list) or not entries:
        raise IndexError
    steps = [e.get("step") if isinstance(e, dict) else None for e in entries]
    if all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
        return entries[max(range(len(entries)), key=lambda i: (steps[i], i))]
    return entries[-1]


def baseline_value(base: dict, name: str, path) -> float | None:
    """The baseline's last value of ``name``: a number, or None where it holds null.

    InputError when the baseline lacks ``name`` altogether or holds something else."""
    holder = base if name in ACCURACIES else base.get("metrics") or {}
    if name not in holder:
        has = [short(k)[1:-1] for k in (base.get("metrics") or {}) if isinstance(k, str)]
        has += [k for k in ACCURACIES if k in base]
        listed = ", ".join(has[:12]) + (", ..." if len(has) > 12 else "")
        hint = " (analysed without --robustness)" if name == "adversarial_accuracy" else ""
        raise InputError(
            f"baseline {path} has no {short(name)} at its last checkpoint{hint}; "
            f"it has: {listed or 'nothing to compare'}"
        )
    b = holder[name]
    if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float))):
        raise InputError(f"baseline {path}: {name} is {short(b)}, not a number")
    if b is not None and name in ACCURACIES and not 0 <= b <= 1:
        raise InputError(f"baseline {path}: {name} is {b:g}, not a fraction in [0, 1]")
    return b


def baseline_notes(report: dict, base: dict, path, names: list[str]) -> list[str]:
    """What differs between how ``report`` and the baseline ``base`` were measured, for the
    gated ``names``: metric means depend on the split and the samples; adversarial accuracy on
    the PGD attack; every value on the data, the weights read (raw or EMA, a state key), the
    output taken as the logits and the version that computed it. A field either report lacks
    (an older alignctl's) is not compared."""
    metrics = [n for n in names if n not in ACCURACIES]
    fields = [(report, base, "split", "split"), (report, base, "n_samples", "samples")]
    fields = fields if metrics else []
    if "adversarial_accuracy" in names:
        fields.append((report, base, "pgd", "PGD attack"))
    mine_on, theirs_on = report.get("measured_on"), base.get("measured_on")
    if isinstance(mine_on, dict) and isinstance(theirs_on, dict):
        for key, label in (("data_sha256", "data"), ("weights", "weights"),
                           ("state_key", "state key"), ("output", "output")):  # fmt: skip
            fields.append((mine_on, theirs_on, key, label))
    fields.append((report, base, "alignctl_version", "alignctl version"))
    notes = []
    for mine_in, theirs_in, key, label in fields:
        mine, theirs = mine_in.get(key), theirs_in.get(key)
        if key not in theirs_in or key not in mine_in or mine == theirs:
            continue
        if key == "data_sha256":  # a digest: its first digits tell the two apart
            mine, theirs = _digits(mine), _digits(theirs)
        if None in (mine, theirs) and key not in ("state_key", "output", "pgd"):
            continue  # unknown on one side (a monitor's report), not different
        notes.append(
            f"baseline {path} was measured with {label} {short(theirs)}, this report with "
            f"{short(mine)}: the baseline gates compare values measured differently"
        )
    return notes


def _digits(digest):
    return digest[:12] if isinstance(digest, str) else digest
