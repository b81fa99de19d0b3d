"""The monitor's log, ``alignment.jsonl``: one strict-JSON line per measurement made inside a
training loop (:class:`alignctl.Monitor`), and the report ``alignctl analyze`` renders from it.

A line is a checkpoint entry of the analysis report (README, "JSON report") without the
verdict, plus when it was taken::

    {"name": "step_00000100", "step": 100, "time": 1717171717.1, "seconds": 0.012,
     "n_samples": 512, "n_classes": 10, "metrics": {"centroid_alignment": 0.41, ...},
     "metrics_std": {...}, "train_accuracy": 0.97, "test_accuracy": null, "diverged": false,
     "input_offset": -0.02}

``time`` is seconds since the epoch, ``seconds`` what the measurement cost; accuracies are on
the probe set (``train_accuracy``) and the optional held-out set (``test_accuracy``). Non-finite
values are written as ``null`` (strict JSON). Verdicts and the recommendation are not stored:
they are recomputed from the lines, with the thresholds of the run's ``alignctl.yaml`` if
there is one, so a log reads the same as a run of checkpoints.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from alignctl._version import __version__
from alignctl.errors import InputError
from alignctl.runs.limits import check_budget
from alignctl.train.jsonio import loads_strict

LOG_NAME = "alignment.jsonl"
JUDGED = ("verdict", "inferred", "evidence")  # report/verdict.judge's fields


def finite_or_none(v):
    """float(v), or None when v is None, NaN or infinite (strict JSON has no NaN)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def make_entry(step: int, means: dict, stds: dict, *, train_accuracy=None, test_accuracy=None,
               n_samples: int, n_classes: int, time: float, seconds: float,
               input_offset: float | None = None) -> dict:  # fmt: skip
    """One log line's dict; ``diverged`` when a metric or accuracy is not finite;
    ``input_offset``: the probe's (:func:`alignctl.report.evidence.input_offset`), which the
    inferred verdict subtracts from the alignment gain."""
    m = {k: finite_or_none(v) for k, v in means.items()}
    raw = [*means.values(), *(a for a in (train_accuracy, test_accuracy) if a is not None)]
    diverged = any(v is None or not math.isfinite(float(v)) for v in raw)
    return {
        "name": f"step_{int(step):08d}", "step": int(step), "time": round(time, 3),
        "seconds": round(seconds, 4), "n_samples": int(n_samples), "n_classes": int(n_classes),
        "metrics": m, "metrics_std": {k: finite_or_none(v) for k, v in stds.items()},
        "train_accuracy": finite_or_none(train_accuracy),
        "test_accuracy": finite_or_none(test_accuracy), "diverged": diverged,
        "input_offset": None if input_offset is None else finite_or_none(input_offset),
    }  # fmt: skip


def to_line(entry: dict) -> str:
    """The strict-JSON line (verdict fields, which are recomputed on reading, left out)."""
    keep = {k: v for k, v in entry.items() if k not in JUDGED}
    return json.dumps(keep, allow_nan=False) + "\n"


def read_log(path: Path) -> tuple[list[dict], list[str]]:
    """(entries in step order, notes). A last line without its newline (being written) is
    left for the next read; a malformed complete line is skipped with a note."""
    path = Path(path)
    check_budget(path, "monitor log")  # a regular file within the read budget (not 64 GiB)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    entries, notes = [], []
    lines = text.split("\n")[:-1]  # what follows the last newline is incomplete
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            e = loads_strict(line)
        except ValueError:
            e = None
        if not _is_measurement(e):
            notes.append(f"{path.name} line {i} is not a measurement; skipped")
            continue
        for k in JUDGED:  # recomputed, never read: a line's own would be trusted as judged
            e.pop(k, None)
        e.setdefault("metrics_std", {})
        e.setdefault("name", f"step_{int(e['step']):08d}")
        for k in ("train_accuracy", "test_accuracy"):
            e.setdefault(k, None)
        e.setdefault("diverged", False)
        e.setdefault("seconds", 0.0)
        entries.append(e)
    entries.sort(key=lambda e: e["step"])
    return entries, notes


def _number(v, lo=-math.inf, hi=math.inf, *, integer=False) -> bool:
    """A finite JSON number in [lo, hi] (1e999 parses as inf: not one)."""
    kinds = int if integer else (int, float)
    ok = isinstance(v, kinds) and not isinstance(v, bool)
    return ok and math.isfinite(v) and lo <= v <= hi


def _is_measurement(e) -> bool:
    """A line as :func:`make_entry` writes it: an integer step, metrics (and their spreads,
    named by printable text) that are finite numbers or null, accuracies in [0, 1] or null;
    other keys optional."""
    if not isinstance(e, dict) or not _number(e.get("step"), 0, 2**63 - 1, integer=True):
        return False
    for key in ("metrics", "metrics_std"):
        m = e.get(key, {})
        if not isinstance(m, dict) or not all(v is None or _number(v) for v in m.values()):
            return False
        if not all(k.isprintable() and k.strip() for k in m):  # names reach every output
            return False
    optional = {"train_accuracy": (0, 1), "test_accuracy": (0, 1), "seconds": (0, math.inf),
                "time": (-math.inf, math.inf), "input_offset": (-math.inf, math.inf)}  # fmt: skip
    return (
        "metrics" in e
        and isinstance(e.get("diverged", False), bool)
        and isinstance(e.get("name", ""), str)
        and all(e.get(k) is None or _number(e[k], *r) for k, r in optional.items())
        and all(
            e.get(k) is None or _number(e[k], 1, integer=True) for k in ("n_samples", "n_classes")
        )
    )


def annotate(entries: list[dict], *, t: dict, grokked: dict | None = None,
             since: int = 0) -> None:  # fmt: skip
    """Set each entry's ``verdict`` and ``inferred`` in order (the inferred verdict reads the
    entries before it), as ``analyze`` does for checkpoints; only ``entries[since:]`` (the
    monitor annotates its newest entry alone)."""
    from alignctl.report.verdict import judge_entries

    for e in entries[since:]:
        if "verdict" not in e and e.get("diverged"):
            e["metrics"] = {k: None for k in e["metrics"]}
    judge_entries(entries, t=t, grokked=grokked, keep_judged=True, evidence=False, since=since,
                  n_classes=lambda e: int(e.get("n_classes") or 2))  # fmt: skip


def recommendation(entries: list[dict], t: dict) -> dict:
    """The run's recommendation through the public ``recommend(checkpoints, thresholds)``,
    with the class count the entries recorded (chance accuracy depends on it)."""
    from alignctl.report.verdict import recommend

    n_classes = next((e.get("n_classes") for e in reversed(entries) if e.get("n_classes")), None)
    return recommend(entries, t, n_classes=int(n_classes) if n_classes else None)


def is_monitor_run(path: Path) -> bool:
    """A folder holding ``alignment.jsonl`` and no checkpoints to analyse. A folder that cannot
    be read is not one: opening it as a run then says why, in one line."""
    try:
        return _is_monitor_run(Path(path))
    except OSError:
        return False


def _is_monitor_run(path: Path) -> bool:
    if not path.is_dir() or not (path / LOG_NAME).is_file():
        return False
    from alignctl.runs.checkpoints import is_checkpoint_name

    folders = [path, path / "checkpoints"]
    return not any(
        is_checkpoint_name(p) and not p.name.startswith(".")
        for f in folders if f.is_dir() for p in f.iterdir()
    )  # fmt: skip


def report_from_log(path: Path) -> dict:
    """The analysis report (same schema as ``analyze``) of a folder's ``alignment.jsonl``."""
    from alignctl.report.verdict import thresholds

    path = Path(path)
    log = path / LOG_NAME if path.is_dir() else path
    entries, notes = read_log(log)
    if not entries:
        raise InputError(f"{log} holds no measurement yet")
    cfg_file = log.parent / "alignctl.yaml"
    grokked, overrides = None, None
    if cfg_file.is_file():
        from alignctl.runs.config import load_config

        cfg = load_config(cfg_file)
        grokked, overrides = cfg.grokked, cfg.verdict
    t = thresholds(overrides)
    annotate(entries, t=t, grokked=grokked)
    names = list(dict.fromkeys(k for e in entries for k in e["metrics"]))
    last = entries[-1]
    return {
        "alignctl_version": __version__, "path": str(path), "device": "monitor",
        "split": "probe", "n_samples": int(last.get("n_samples") or 0), "metric_names": names,
        "checkpoints": entries, "verdict": last["verdict"], "inferred": bool(last["inferred"]),
        "recommendation": recommendation(entries, t), "gates": [], "passed": True,
        "pgd": None, "notes": notes,
    }  # fmt: skip


def check_log_options(report: dict, given: dict[str, bool], metrics: list[str] | None) -> None:
    """InputError when the options ask for what a log cannot give: the measurements were made
    inside the training loop, on its probe, with its metrics; ``given`` maps each measurement
    option (``--split``, ``--robustness``, ...) to whether it was set, ``metrics`` are the
    metrics asked for explicitly (None: the default)."""
    asked = [name for name, on in given.items() if on]
    missing = [m for m in metrics or [] if m not in report["metric_names"]]
    if missing:
        asked.append(f"--metrics ({', '.join(missing)} not in the log)")
    if asked:
        raise InputError(
            f"{report['path']} holds only the monitor's {LOG_NAME} (measured during training, "
            f"on its probe), so {', '.join(asked)} cannot apply; analyse checkpoints for that "
            "(Monitor(save_checkpoints=True))"
        )
