"""Distributions, not only means: per-sample violins of a metric at chosen steps, and its mean
per class. Needs the per-sample values that ``analyze --keep-samples`` stores under
``samples`` (``labels``, ``indices``, and one {metric: [n values]} per checkpoint).
"""

from __future__ import annotations

import numpy as np

from alignctl.errors import InputError
from alignctl.report.figures import literal
from alignctl.report.figures.trajectories import PANELS, Series

_DASHES = ("-", "--", ":", "-.")


def nearest_checkpoint(report: dict, step: int) -> int:
    """Index of the checkpoint whose step is nearest to ``step`` (the earlier on a tie)."""
    steps = [c["step"] for c in report["checkpoints"]]
    if not steps:
        raise InputError(f"{report.get('path')}: the report has no checkpoints")
    return min(range(len(steps)), key=lambda i: (abs(steps[i] - step), steps[i]))


def sample_values(report: dict, metric: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(values (n,), labels (n,)) of ``metric`` at checkpoint ``index``; InputError when the
    report has no per-sample values or not this metric."""
    samples = report.get("samples")
    if not samples:
        raise InputError(
            f"{report.get('path')}: the report has no per-sample values; "
            "analyse with --keep-samples (or pass the run directory)"
        )
    if metric not in (report.get("metric_names") or []):
        have = ", ".join(report.get("metric_names") or [])
        raise InputError(f"{report.get('path')}: no metric {metric!r} (it has {have})")
    entry = samples["metrics"][index]
    values = np.full(len(samples["labels"]), np.nan) if entry is None else np.array(entry[metric])
    return values.astype(float), np.array(samples["labels"])


def check_dist(runs: list[Series], metric: str) -> None:
    """Usage errors before drawing: every run has per-sample values of ``metric``."""
    for s in runs:
        sample_values(s.report, metric, 0)


def _violin(ax, values: np.ndarray, pos: float, color: str) -> bool:
    """A violin of the finite values at ``pos``; False (nothing drawn) when there are none."""
    vals = values[np.isfinite(values)]
    if len(vals) == 0:
        return False
    if len(vals) > 1 and np.ptp(vals) > 1e-12 * max(1.0, float(np.abs(vals).max())):
        parts = ax.violinplot([vals], [pos], widths=0.8, showmedians=True)
        for body in parts["bodies"]:
            body.set_facecolor(color)
            body.set_alpha(0.35)
        for key in ("cbars", "cmins", "cmaxes", "cmedians"):
            parts[key].set_color(color)
            parts[key].set_linewidth(0.8)
    else:  # one value (or all equal): no density to estimate
        ax.plot([pos - 0.3, pos + 0.3], [vals[0], vals[0]], color=color, lw=2)
    return True


def _nothing_at(ax, pos: float, color: str, ck: dict) -> None:
    """Say so where a checkpoint has no values (it diverged): an empty slot and a legend
    entry for a curve that is not there read as a drawing error."""
    why = "diverged" if ck.get("diverged") or ck.get("verdict") == "diverged" else "no values"
    ax.annotate(f"{why}:\nno values", (pos, 0.5), xycoords=("data", "axes fraction"),
                ha="center", va="center", fontsize=7, color=color)  # fmt: skip


def draw_distribution(ax_violin, ax_class, runs: list[Series], metric: str, at: list[int]):
    """Violins of ``metric`` per requested step (grouped) and run (coloured) on ``ax_violin``;
    the per-class means at those steps on ``ax_class`` (line style = step)."""
    width = len(runs) + 1
    ticks, ticklabels, drawn = [], [], []
    for j, step in enumerate(at):
        found, any_drawn = [], False
        for r, s in enumerate(runs):
            i = nearest_checkpoint(s.report, step)
            found.append(s.report["checkpoints"][i]["step"])
            values, labels = sample_values(s.report, metric, i)
            if not _violin(ax_violin, values, j * width + r, s.color):
                _nothing_at(ax_violin, j * width + r, s.color, s.report["checkpoints"][i])
                continue
            any_drawn = True
            finite = np.isfinite(values)
            classes = np.unique(labels[finite])
            means = [float(np.mean(values[finite & (labels == c)])) for c in classes]
            ax_class.plot(classes, means, _DASHES[j % 4], marker="o", ms=3, color=s.color)
        ticks.append(j * width + (len(runs) - 1) / 2)
        shown = sorted(set(found))
        ticklabels.append("step " + "/".join(str(v) for v in shown))
        drawn.append(any_drawn)
    ax_violin.set_xlim(-0.75, (len(at) - 1) * width + len(runs) - 0.25)
    # colour = run (the figure's legend), line style = step: one key entry per step drawn
    from matplotlib.lines import Line2D

    keys = [Line2D([], [], color="0.3", ls=_DASHES[j % 4], marker="o", ms=3, label=text)
            for j, text in enumerate(ticklabels) if drawn[j]]  # fmt: skip
    title = PANELS.get(metric, (literal(metric),))[0]
    ax_violin.set_xticks(ticks, ticklabels)
    ax_violin.grid(axis="x", visible=False)
    ax_violin.set_title(f"{title}: per-sample distribution", loc="left")
    ax_class.set_title("mean per class", loc="left")
    ax_class.set_xlabel("class")
    ax_class.xaxis.get_major_locator().set_params(integer=True)
    # keys long enough to show each step's dash pattern on both sides of the marker (the
    # default 2 font sizes at 6 pt drew "--" and ":" as solid lines, all steps alike)
    if keys:
        ax_class.legend(handles=keys, frameon=False, fontsize=6, loc="best", handlelength=6)
    else:
        ax_class.annotate("no values at these steps", (0.5, 0.5), xycoords="axes fraction",
                          ha="center", va="center", fontsize=7, color="0.35")  # fmt: skip
