"""``alignctl compare`` as a library call: several runs' reports side by side.

A run is an ``analyze --json`` report file or a run directory (analysed on the fly). Its label
is its regulariser(s), from the report or the run's ``alignctl.yaml`` (``train.regularisers``;
``baseline`` when there is none). The first run is the reference: at each of its checkpoints
every other run's nearest checkpoint (by step; the earlier on a tie) is matched and the
differences other - reference are taken; each run's last checkpoint is matched too.
"""

from __future__ import annotations

import json
from pathlib import Path

from alignctl.errors import InputError
from alignctl.report.cells import field, metric_names
from alignctl.report.figures import COLORS
from alignctl.report.figures.trajectories import Series
from alignctl.runs.limits import loads_json, read_text_capped
from alignctl.runs.validate import is_finite_real

ACCURACIES = ("train_accuracy", "test_accuracy", "adversarial_accuracy", "noise_accuracy")
SHOWN = {"train_accuracy": "train acc", "test_accuracy": "test acc",
         "centroid_alignment": "cent. align", "jacobian_norm": "‖J‖_F",
         "jacobian_erank": "erank"}  # fmt: skip


MAX_REPORT_BYTES = 64 << 20  # as a --baseline report (report/baseline.py)


def _is_entry(c) -> bool:
    """A report's checkpoint entry as analyze writes it: an integer step (checkpoints are
    matched by step: a step of "x", or null, reached the step arithmetic as a TypeError),
    metrics a mapping (or null)."""
    step, metrics = (c.get("step", ""), c.get("metrics", "")) if isinstance(c, dict) else ("", "")
    step_ok = isinstance(step, int) and not isinstance(step, bool)
    return step_ok and (metrics is None or isinstance(metrics, dict))


def load_report(spec, **analyze_kwargs) -> dict:
    """A report from an ``analyze --json`` file, a monitor's ``alignment.jsonl`` folder (as
    ``analyze`` reads it), or by analysing a run directory."""
    from alignctl.report.monitor_log import is_monitor_run, report_from_log

    path = Path(spec)
    if is_monitor_run(path):
        return report_from_log(path)
    if path.is_file() and path.suffix == ".json":
        try:  # a report is kilobytes: a 64 GiB (sparse) file is refused unread
            report = loads_json(read_text_capped(path, "report", limit=MAX_REPORT_BYTES))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path}: not a readable JSON report ({e})") from None
        cks = report.get("checkpoints") if isinstance(report, dict) else None
        if not isinstance(cks, list) or not all(_is_entry(c) for c in cks):
            raise InputError(f"{path}: not an alignctl analyze report (a checkpoints list "
                             "whose entries have an integer step and metrics)")  # fmt: skip
        # everything else is read as text or as a number where it is one (field by field):
        # a report from another version or edited by hand is compared, not refused
        return report
    from alignctl.report.analysis import analyze
    from alignctl.runs.run import open_run

    return analyze(open_run(path), **analyze_kwargs)


def regulariser_label(regs: list[dict]) -> str:
    """'baseline' without regularisers, else e.g. 'grokalign λ=0.1 + grokfast' (an entry
    that is not a mapping, or a name that is not text, is shown as its text)."""
    if not regs:
        return "baseline"
    parts = []
    for r in regs:
        if not isinstance(r, dict):
            parts.append(str(r))
            continue
        lam = _number(r.get("lambda", r.get("lam")))
        parts.append(str(r.get("name", "?")) + (f" λ={lam:g}" if lam is not None else ""))
    return " + ".join(parts)


def run_label(report: dict) -> str:
    if isinstance(report.get("regularisers"), list):
        return regulariser_label(report["regularisers"])
    config = Path(str(report.get("path", ""))) / "alignctl.yaml"
    if config.is_file():
        from alignctl.runs.config import load_config

        try:
            return regulariser_label(load_config(config).train.get("regularisers") or [])
        except InputError:
            pass
    return run_name(report)


def run_name(report: dict) -> str:
    return Path(str(report.get("path", "run"))).name or "run"


def _tail(report: dict, depth: int) -> str:
    parts = Path(str(report.get("path", "run"))).parts[-depth:]
    return "/".join(parts) or "run"


def series(reports: list[dict]) -> list[Series]:
    """One legend entry per run; equal labels get the run's name added, or as many of its
    path's last folders as tell the runs apart, or (one run given twice) a number."""
    labels = [run_label(r) for r in reports]
    for i, label in enumerate(list(labels)):
        same = [j for j, other in enumerate(labels) if other == label]
        if len(same) < 2 or i != same[0]:
            continue
        tails = [_tail(reports[j], 1) for j in same]
        for depth in range(2, 9):
            if len(set(tails)) == len(tails):
                break
            deeper = [_tail(reports[j], depth) for j in same]
            if len(set(deeper)) == len(deeper):
                tails = deeper
        counts = {t: tails.count(t) for t in tails}
        seen: dict[str, int] = {}
        for j, t in zip(same, tails, strict=True):
            seen[t] = seen.get(t, 0) + 1
            labels[j] = f"{label} ({t}{f', {seen[t]}' if counts[t] > 1 else ''})"
    return [Series(label, rep, COLORS[i % len(COLORS)])
            for i, (rep, label) in enumerate(zip(reports, labels, strict=True))]  # fmt: skip


def _number(v) -> float | None:
    """``v`` as a finite float, else None (null, NaN, text, booleans, an integer beyond
    float's range: :func:`alignctl.runs.validate.is_finite_real`)."""
    return float(v) if is_finite_real(v) else None


def _value(ck: dict, key: str):
    return _number(ck.get(key) if key in ACCURACIES else (ck.get("metrics") or {}).get(key))


def _keys(reports: list[dict]) -> list[str]:
    accs = [k for k in ACCURACIES if all(any(_value(c, k) is not None for c in r["checkpoints"])
                                         for r in reports)]  # fmt: skip
    # a report without metric_names (hand-made, older): the metrics its checkpoints hold
    names = [metric_names(r) for r in reports]
    common = set.intersection(*map(set, names))
    return accs + [m for m in names[0] if m in common]


def _row(cks: list[dict], keys: list[str], step) -> dict:
    vals = {k: [_value(c, k) for c in cks] for k in keys}
    diff = {}
    for k, (v0, *others) in vals.items():
        # two finite values can differ by more than a float holds (1e308 - -1e308): null
        diff[k] = [None] + [None if v is None or v0 is None else _number(v - v0) for v in others]
    steps = [c["step"] for c in cks]
    return {"step": step, "steps": steps, "exact": len(set(steps)) == 1,
            "verdicts": [c.get("verdict") for c in cks], "values": vals, "diff": diff}  # fmt: skip


def comparison(runs: list[Series]) -> dict:
    """The JSON of ``compare``: runs, compared quantities, matched rows and the last row."""
    from alignctl.report.figures.distributions import nearest_checkpoint

    reports = [s.report for s in runs]
    if any(not r["checkpoints"] for r in reports):
        raise InputError("a run to compare has no checkpoints")
    keys = _keys(reports)
    rows = []
    for ck in reports[0]["checkpoints"]:
        cks = [r["checkpoints"][nearest_checkpoint(r, ck["step"])] for r in reports]
        rows.append(_row(cks, keys, ck["step"]))
    return {
        "runs": [{"path": r.get("path"), "label": s.label, "verdict": r.get("verdict"),
                  "step_unit": r.get("step_unit", "step"),
                  "last_step": r["checkpoints"][-1]["step"],
                  "recommendation": field(r.get("recommendation"), "action")}
                 for s, r in zip(runs, reports, strict=True)],
        "reference": runs[0].label, "quantities": keys, "rows": rows,
        "last": _row([r["checkpoints"][-1] for r in reports], keys, None),
    }  # fmt: skip


def to_json(cmp: dict) -> str:
    """The comparison as strict JSON (``--json``): what a report file held as NaN or
    Infinity (another tool's report, read leniently) is null, as in ``analyze --json``."""
    from alignctl.report.render import to_json as strict

    return strict(cmp)


def _cell(row: dict, key: str, i: int) -> str:
    v, d = row["values"][key][i], row["diff"][key][i]
    pct = key in ACCURACIES
    if v is None:
        return "-"
    text = f"{v:.1%}" if pct else f"{v:.4g}"
    if d is not None:
        text += f" ({d * 100:+.1f} pt)" if pct else f" ({d:+.3g})"
    return text


def table_rows(cmp: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows): per matched step, the reference's values, then each other run's
    values with its difference from the reference in parentheses."""
    from alignctl.report.cells import clean, num

    keys = [k for k in cmp["quantities"] if k in SHOWN]
    header = ["step", "run", "verdict"] + [SHOWN[k] for k in keys]
    out = []
    for row in [*cmp["rows"], cmp["last"]]:
        for i, run in enumerate(cmp["runs"]):
            step = str(row["steps"][i]) if row["step"] is not None else f"last {row['steps'][i]}"
            # labels and verdicts come from folder names and report files: one line of
            # visible text (an escape sequence in a folder name reached the terminal)
            out.append([step if i == 0 or row["steps"][i] != row["steps"][0] or row["step"] is None
                        else "", clean(run["label"]), num(row["verdicts"][i])]
                       + [_cell(row, k, i) for k in keys])  # fmt: skip
    return header, out


def _named(run: dict) -> str:
    """A run's label with its folder's name, unless the label already holds it (labels made
    unique by :func:`series` end in the folder: it was written twice)."""
    import re

    label, name = str(run["label"]), Path(str(run["path"])).name
    held = re.search(rf"[(/]{re.escape(name)}(, \d+)?\)$", label)
    return label if held else f"{label} ({name})"


def to_markdown(cmp: dict, figure: str | None = None) -> str:
    """GitHub-flavoured Markdown; labels, paths and verdicts come from run folders' names
    and report files, so every piece of text is escaped (a ``|`` would split a cell)."""
    from alignctl.report.cells import num
    from alignctl.report.render_markdown import escape, table

    header, rows = table_rows(cmp)
    names = " vs ".join(escape(_named(r)) for r in cmp["runs"])
    out = [f"### alignctl compare: {names}", ""]
    if figure:
        out += [f"![alignctl compare]({figure})", ""]
    out += table(header, rows)
    ref = escape(cmp["reference"])
    out += ["", f"Differences (in parentheses) are from {ref}, at the nearest checkpoint "
            "of each run; `last` rows compare the last checkpoints."]  # fmt: skip
    for r in cmp["runs"]:
        out.append(f"- {escape(r['label'])}: {escape(num(r['verdict']))}, recommendation "
                   f"{escape(num(r['recommendation']))}")  # fmt: skip
    return "\n".join(out) + "\n"
