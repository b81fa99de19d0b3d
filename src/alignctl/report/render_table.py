"""The terminal table and panel of a report (rich), sized for the terminal they are shown in.

Numbers are never cut: every column is as wide as its widest cell, and what does not fit the
width is dropped instead, key columns last: step and the verdict always stay, the accuracies
unless the terminal is too narrow for them, then the metrics in the order of
:data:`PRIORITY`. Headers wrap at spaces (a column is never narrower than a header word); the
verdict wraps when it must. ``wide=True`` keeps every
column and every metric of the report.
"""

from __future__ import annotations

import math

from rich import box
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from alignctl.report.cells import (
    ACCURACIES,
    accuracy_keys,
    checkpoints,
    clean,
    field,
    gate_passed,
    gate_text,
    gates,
    is_real,
    metric,
    metric_columns,
    metric_names,
    num,
    pct,
    step,
    step_unit,
    verdict,
)

# which metrics stay when the width is short: generalisation, GrokAlign's penalty, robustness
PRIORITY = ("centroid_alignment", "jacobian_norm", "jacobian_alignment_full", "jacobian_erank",
            "jacobian_alignment", "centroid_norm", "jacobian_pc1")  # fmt: skip
TRENDS = ("centroid_alignment", "jacobian_alignment_full", "centroid_norm", "jacobian_erank")
STYLE = {"learning": "yellow", "memorising": "red", "generalising": "green",
         "robust": "bold green", "diverged": "bold red"}  # fmt: skip
_BARS = "▁▂▃▄▅▆▇█"


def _style(verdict) -> str:
    return STYLE.get(verdict, "") if isinstance(verdict, str) else ""


def _word(text: str) -> int:
    return max((cell_len(w) for w in text.split()), default=1)


def _column(header: str, cells: list[str], *, wraps: bool = False) -> dict:
    widest = max((cell_len(c) for c in cells), default=0)
    least = max(_word(header), max((_word(c) for c in cells), default=0) if wraps else widest)
    return {"header": header, "cells": cells, "min": least, "full": max(least, widest),
            "wraps": wraps}  # fmt: skip


def _build(columns: list[dict], widths: list[int], title=None, caption=None) -> Table:
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, collapse_padding=True, title_justify="left",
                  caption_justify="left")  # fmt: skip
    for col, w in zip(columns, widths, strict=True):
        table.add_column(col["header"], justify="left" if col["wraps"] else "right",
                         width=w, overflow="fold")  # fmt: skip
    n = max((len(c["cells"]) for c in columns), default=0)
    for i in range(n):
        row = []
        for col in columns:
            text = col["cells"][i]
            row.append(Text(text, style=_style(text.split(" ")[0]) if col["wraps"] else ""))
        table.add_row(*row)
    return table


SEP = 2  # cells between two columns: the box's blank divider and one collapsed padding


def _width(columns: list[dict], widths: list[int]) -> int:
    """The rendered width of a table with these fixed column widths (``_build``'s layout:
    no edges, padding collapsed; tests/test_render.py checks it against rich's rendering)."""
    return sum(widths) + SEP * max(len(widths) - 1, 0)


def fit_columns(report: dict, width: int | None, wide: bool = False) -> tuple[list, list, list]:
    """(columns, widths, hidden headers) of the table for ``width`` terminal columns.

    Step and verdict always stay; the accuracies next (left out only on a terminal too narrow
    for them, where folding them would cut numbers), then the metrics by :data:`PRIORITY`.
    A terminal narrower than step and verdict gets a table wider than it (:func:`table_width`)
    rather than a cut step."""
    cks = checkpoints(report)
    fixed = [_column("step", [step(c) for c in cks])]
    accs = {k: _column(ACCURACIES[k], [pct(field(c, k)) for c in cks])
            for k in accuracy_keys(report, wide)}  # fmt: skip
    cols = metric_columns(report, wide)
    metric_cols = {k: _column(h, [num(metric(c, k)) for c in cks]) for k, h in cols}
    last = _column("verdict", [verdict(c) for c in cks], wraps=True)
    order = [k for k in PRIORITY if k in metric_cols] + [k for k in metric_cols
                                                         if k not in PRIORITY]  # fmt: skip
    chosen: list[str] = []

    def layout(keys, verdict_width):
        keep = [accs[k] for k in accs if k in keys] + [metric_cols[k] for k, _ in cols if k in keys]
        columns = fixed + keep + [last]
        return columns, [c["full"] for c in fixed + keep] + [verdict_width]

    if wide or width is None:
        chosen = list(accs) + list(metric_cols)
    else:
        for k in list(accs) + order:  # greedy by priority: a column that fits stays
            if _width(*layout(chosen + [k], last["min"])) <= width:
                chosen.append(k)
            elif k in accs:  # accuracies first: no metric while an accuracy is left out
                break
    columns, widths = layout(chosen, last["min"])
    if width is not None:  # widen the verdict column into what is left, up to its full text
        spare = width - _width(columns, widths)
        widths[-1] = max(last["min"], min(last["full"], widths[-1] + max(spare, 0)))
    else:
        widths[-1] = last["full"]
    hidden = [accs[k]["header"] for k in accs if k not in chosen]
    hidden += [h for k, h in cols if k not in chosen]
    return columns, widths, hidden


def table_width(report: dict, width: int | None, wide: bool = False) -> int:
    """Columns the table fitted to ``width`` takes: at most ``width`` unless step and verdict
    alone need more (the console must then be that wide, or rich would fold numbers)."""
    columns, widths, _ = fit_columns(report, width, wide)
    return _width(columns, widths)


def natural_width(report: dict, wide: bool = False) -> int:
    """Columns the table needs to show every column (with ``wide``, every metric) uncut."""
    return table_width(report, None, wide)


def rich_table(report: dict, width: int | None = None, wide: bool = False, hint: str = ""):
    """The per-checkpoint table, fitted to ``width`` columns (None: no limit)."""
    columns, widths, hidden = fit_columns(report, width, wide)
    unit = step_unit(report)
    target = field(report, "target", field(report, "path", ""))  # older reports: the run
    title = (
        f"alignctl analyze {clean(target)}  ({num(field(report, 'split'))} split,"
        f" {num(field(report, 'n_samples'))} samples, "
        f"{num(field(report, 'device'))}" + (f"; step: {unit}" if unit else "") + ")"
    )
    caption = (f"not shown, to fit {width} columns: {', '.join(hidden)}" + (f" ({hint})" if hint
               else "")) if hidden else None  # fmt: skip
    return _build(columns, widths, title=Text(title), caption=Text(caption) if caption else None)


def sparkline(values: list, limit: int | None = None) -> str:
    vals = [float(v) for v in values if is_real(v) and math.isfinite(v)]
    if limit is not None and len(vals) > limit > 0:  # evenly spaced samples, ends kept
        vals = [vals[round(i * (len(vals) - 1) / (limit - 1))] if limit > 1 else vals[-1]
                for i in range(limit)]  # fmt: skip
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    return "".join(_BARS[min(7, max(0, int((v - lo) / span * 7.999)))] for v in vals)


def rich_panel(report: dict, width: int | None = None):
    """The run's verdict, recommendation, trends of the key metrics and gates."""
    from rich.panel import Panel

    rec = field(report, "recommendation")
    v = field(report, "verdict")
    text = Text()
    text.append("verdict: ")
    text.append("-" if v is None else clean(v), style=_style(v))
    if field(report, "inferred") is True:
        text.append(" (inferred from alignment: no test split)")
    text.append("\nrecommendation: ")
    text.append(num(field(rec, "action")), style="bold")
    text.append(f" - {num(field(rec, 'reason'))}")
    names = metric_names(report)
    room = None if width is None else max(8, width - 4 - 25 - 24)
    for k in TRENDS:
        vals = [metric(c, k) for c in checkpoints(report)]
        fin = [x for x in vals if is_real(x) and math.isfinite(x)]
        if k in names and fin:
            text.append(f"\n{k:<24} {sparkline(vals, room)}  {num(fin[0])} -> {num(fin[-1])}")
    for g in gates(report):
        text.append("\ngate ")
        ok = gate_passed(g)
        text.append("pass" if ok else "FAIL", style="green" if ok else "red")
        text.append(f": {gate_text(g)}")
    return Panel(text, title="run", expand=False)
