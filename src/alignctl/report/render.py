"""Rendering an analysis report: the rich table and panel, Markdown, CSV, JSON and a plot.

Pure functions of the report dict; the CLI decides where each goes (data on stdout,
progress on stderr). Each renderer accepts any value a report can hold (see
:mod:`alignctl.report.cells`); the table lives in :mod:`.render_table`, Markdown in
:mod:`.render_markdown`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers

from alignctl.report.cells import HEADERS, checkpoints, field, is_real
from alignctl.report.cells import metric_names as _metric_names
from alignctl.report.render_markdown import escape, to_markdown
from alignctl.report.render_table import (
    TRENDS,
    fit_columns,
    natural_width,
    rich_panel,
    rich_table,
    sparkline,
    table_width,
)

COLUMNS = list(HEADERS.items())  # (metric, header), the table's metric columns
__all__ = ["COLUMNS", "TRENDS", "escape", "fit_columns", "natural_width", "plot", "rich_panel",
           "rich_table", "sparkline", "step_summary", "table_width", "to_csv", "to_json",
           "to_markdown", "to_rows"]  # fmt: skip


def to_rows(report: dict) -> tuple[list[str], list[list]]:
    """CSV header and rows: one row per checkpoint, every metric's mean and std (columns
    added since 0.1 come last, so positions stay)."""
    names = _metric_names(report)
    header = ["name", "step", "train_accuracy", "test_accuracy", "adversarial_accuracy"]
    header += names + [f"{n}_std" for n in names] + ["verdict", "inferred", "seconds"]
    header += ["step_unit", "noise_accuracy"]
    rows = []
    for ck in checkpoints(report):
        means, stds = field(ck, "metrics") or {}, field(ck, "metrics_std") or {}
        rows.append([field(ck, k) for k in header[:5]] + [field(means, n) for n in names]
                    + [field(stds, n) for n in names] + [field(ck, "verdict"),
                    field(ck, "inferred", False), field(ck, "seconds"),
                    field(ck, "step_unit", field(report, "step_unit")),
                    field(ck, "noise_accuracy")])  # fmt: skip
    return header, rows


# a text cell a spreadsheet would run as a formula (OWASP's CSV injection list), or one that
# already starts with the quote that defuses them (so reading back is unambiguous)
_FORMULA = ("=", "+", "-", "@", "\t", "\r", "'")


def _csv_value(v) -> str:
    """A cell's text: numbers exactly (``repr``), text as is but defused: a text cell starting
    with ``= + - @``, a tab, a carriage return or ``'`` gets one ``'`` in front (a checkpoint
    named ``=HYPERLINK(...)`` was a live formula in a spreadsheet); numbers are never
    prefixed."""
    if v is None:
        return ""
    if isinstance(v, (bool, numbers.Integral)):
        text = str(v)
    elif is_real(v):
        text = repr(float(v))
    else:
        text = v if isinstance(v, str) else json.dumps(_jsonable(v), ensure_ascii=False)
        text = "'" + text if text.startswith(_FORMULA) else text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    header, rows = to_rows(report)
    w.writerow([_csv_value(h) for h in header])
    w.writerows([[_csv_value(v) for v in r] for r in rows])
    return buf.getvalue()


def _jsonable(obj):
    """JSON's values: non-finite floats become null (JSON has no NaN), keys strings, anything
    else its text."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if is_real(obj):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return str(obj)


def to_json(report: dict) -> str:
    """The report as strict JSON (``--json``)."""
    return json.dumps(_jsonable(report), indent=2, allow_nan=False) + "\n"


def step_summary(report: dict) -> str:
    """What ``GITHUB_STEP_SUMMARY`` gets: the Markdown summary."""
    return to_markdown(report)


def plot(report: dict, path, *, dist: str | None = None, at=None) -> None:
    """Metric trajectories over steps, optionally with per-sample distributions of ``dist``
    at steps ``at`` (matplotlib, from the ``plot`` extra): :mod:`alignctl.report.figures`."""
    from alignctl.report.figures.pages import plot_report

    plot_report(report, path, dist=dist, at=at)
