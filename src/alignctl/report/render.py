"""Rendering an analysis report: the rich table and panel, CSV, Markdown and a plot.

Pure functions of the report dict; the CLI decides where each goes (data on stdout,
progress on stderr).
"""

from __future__ import annotations

import csv
import io
import math

COLUMNS = [  # (metric, header)
    ("centroid_alignment", "cent. align"),
    ("jacobian_alignment", "jac. align"),
    ("jacobian_alignment_full", "jac. align full"),
    ("centroid_norm", "|mu|"),
    ("jacobian_norm", "|J|_F"),
    ("jacobian_pc1", "PC1"),
    ("jacobian_erank", "erank"),
]
TRENDS = ("centroid_alignment", "jacobian_alignment_full", "centroid_norm", "jacobian_erank")
_BARS = "▁▂▃▄▅▆▇█"
_STYLE = {"learning": "yellow", "memorising": "red", "generalising": "green",
          "robust": "bold green", "diverged": "bold red"}  # fmt: skip


def _fmt(v, pct=False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.1%}" if pct else f"{v:.4g}"


def sparkline(values: list) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo or 1.0
    return "".join(_BARS[min(7, int((v - lo) / span * 7.999))] for v in vals)


def _columns(report: dict) -> list[tuple[str, str]]:
    names = set(report.get("metric_names") or [])
    return [(k, h) for k, h in COLUMNS if k in names]


def _verdict_text(ck: dict) -> str:
    return ck["verdict"] + (" (inferred)" if ck.get("inferred") else "")


def rich_table(report: dict):
    from rich.table import Table

    table = Table(title=f"alignctl analyze {report['path']}  ({report['split']} split, "
                  f"{report['n_samples']} samples, {report['device']})")  # fmt: skip
    cols = _columns(report)
    adv = any("adversarial_accuracy" in c for c in report["checkpoints"])
    for h in (
        ["step", "train acc", "test acc"] + (["adv. acc"] if adv else []) + [h for _, h in cols]
    ):
        table.add_column(h, justify="right")
    table.add_column("verdict")
    for ck in report["checkpoints"]:
        row = [str(ck["step"]), _fmt(ck["train_accuracy"], True), _fmt(ck["test_accuracy"], True)]
        if adv:
            row.append(_fmt(ck.get("adversarial_accuracy"), True))
        row += [_fmt(ck["metrics"].get(k)) for k, _ in cols]
        style = _STYLE.get(ck["verdict"], "")
        row.append(f"[{style}]{_verdict_text(ck)}[/]" if style else _verdict_text(ck))
        table.add_row(*row)
    return table


def rich_panel(report: dict):
    from rich.panel import Panel

    rec = report["recommendation"]
    verdict = report["verdict"] or "-"
    lines = [f"verdict: [{_STYLE.get(verdict, '')}]{verdict}[/]"
             + (" (inferred from alignment: no test split)" if report.get("inferred") else ""),
             f"recommendation: [bold]{rec['action']}[/] - {rec['reason']}"]  # fmt: skip
    names = set(report.get("metric_names") or [])
    for k in TRENDS:
        if k in names:
            vals = [c["metrics"].get(k) for c in report["checkpoints"]]
            fin = [v for v in vals if v is not None and math.isfinite(v)]
            if fin:
                lines.append(f"{k:<24} {sparkline(vals)}  {fin[0]:.4g} -> {fin[-1]:.4g}")
    for g in report.get("gates") or []:
        mark = "[green]pass[/]" if g["passed"] else "[red]FAIL[/]"
        lines.append(f"gate {mark}: {g['rule']} (value {_fmt(g['value'])})")
    return Panel("\n".join(lines), title="run", expand=False)


def to_rows(report: dict) -> tuple[list[str], list[list]]:
    names = report.get("metric_names") or []
    header = ["name", "step", "train_accuracy", "test_accuracy", "adversarial_accuracy"]
    header += names + [f"{n}_std" for n in names] + ["verdict", "inferred", "seconds"]
    rows = []
    for ck in report["checkpoints"]:
        rows.append([ck["name"], ck["step"], ck["train_accuracy"], ck["test_accuracy"],
                     ck.get("adversarial_accuracy")] + [ck["metrics"].get(n) for n in names]
                    + [ck["metrics_std"].get(n) for n in names]
                    + [ck["verdict"], ck.get("inferred", False), ck["seconds"]])  # fmt: skip
    return header, rows


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    header, rows = to_rows(report)
    w.writerow(header)
    w.writerows([["" if v is None else v for v in r] for r in rows])
    return buf.getvalue()


def to_markdown(report: dict) -> str:
    cols = _columns(report)
    head = ["step", "train acc", "test acc"] + [h for _, h in cols] + ["verdict"]
    out = [f"### alignctl analyze `{report['path']}`", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for ck in report["checkpoints"]:
        cells = [str(ck["step"]), _fmt(ck["train_accuracy"], True), _fmt(ck["test_accuracy"], True)]
        cells += [_fmt(ck["metrics"].get(k)) for k, _ in cols] + [_verdict_text(ck)]
        out.append("| " + " | ".join(cells) + " |")
    rec = report["recommendation"]
    inferred = " (inferred)" if report.get("inferred") else ""
    out += ["", f"**Verdict:** {report['verdict']}{inferred}",
            f"**Recommendation:** `{rec['action']}`: {rec['reason']}"]  # fmt: skip
    for g in report.get("gates") or []:
        out.append(
            f"- {'pass' if g['passed'] else '**FAIL**'}: {g['rule']} (value {_fmt(g['value'])})"
        )
    return "\n".join(out) + "\n"


def plot(report: dict, path, *, dist: str | None = None, at=None) -> None:
    """Metric trajectories over steps, optionally with per-sample distributions of ``dist``
    at steps ``at`` (matplotlib, from the ``plot`` extra): :mod:`alignctl.report.figures`."""
    from alignctl.report.figures.pages import plot_report

    plot_report(report, path, dist=dist, at=at)
