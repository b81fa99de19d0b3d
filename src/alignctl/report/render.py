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

from alignctl.report.cells import HEADERS, checkpoints, field, is_real, metric_columns
from alignctl.report.cells import metric_names as _metric_names
from alignctl.report.render_markdown import escape, to_markdown
from alignctl.report.render_table import (
    TRENDS,
    fit_columns,
    natural_width,
    rich_panel,
    rich_table,
    sparkline,
)

COLUMNS = list(HEADERS.items())  # (metric, header), the table's metric columns
__all__ = ["COLUMNS", "TRENDS", "escape", "fit_columns", "natural_width", "plot", "rich_panel",
           "rich_table", "sparkline", "step_summary", "to_csv", "to_json", "to_markdown",
           "to_rows"]  # fmt: skip


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


def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, numbers.Integral)):
        text = str(v)
    elif is_real(v):
        text = repr(float(v))
    elif isinstance(v, str):
        text = v
    else:
        text = json.dumps(_jsonable(v), ensure_ascii=False)
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


def plot(report: dict, path) -> None:
    """Metric trajectories over steps (matplotlib, from the ``plot`` extra)."""
    from alignctl.errors import missing_extra

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise missing_extra("--plot", "matplotlib", "plot") from None

    def series(values):
        return [float(v) if is_real(v) else float("nan") for v in values]

    cks = checkpoints(report)
    steps = [s if is_real(s) else i for i, s in enumerate(field(c, "step") for c in cks)]
    names = [k for k, _ in metric_columns(report)]
    fig, axes = plt.subplots(len(names) + 1, 1, figsize=(7, 2.0 * (len(names) + 1)), sharex=True,
                             squeeze=False)  # fmt: skip
    axes = axes[:, 0]
    for key in ("train_accuracy", "test_accuracy", "adversarial_accuracy"):
        vals = [field(c, key) for c in cks]
        if any(v is not None for v in vals):
            axes[0].plot(steps, series(vals), label=key)
    axes[0].set_ylabel("accuracy")
    if axes[0].lines:
        axes[0].legend(fontsize=7)
    for ax, k in zip(axes[1:], names, strict=True):
        ax.plot(steps, series((field(c, "metrics") or {}).get(k) for c in cks))
        ax.set_ylabel(k, fontsize=7)
    unit = field(report, "step_unit")
    axes[-1].set_xlabel(f"step ({unit})" if isinstance(unit, str) and unit else "step")
    if max(steps, default=0) > 100 and min(steps, default=0) >= 0:
        axes[-1].set_xscale("symlog")
    fig.suptitle(f"{field(report, 'path', '')}: {field(report, 'verdict')}")
    fig.tight_layout()
    from alignctl.runs.atomic import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
