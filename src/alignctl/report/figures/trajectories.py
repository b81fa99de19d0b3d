"""Trajectories of one run or several overlaid: a small grid of panels, mean +- 1 std across
samples, markers at checkpoints, verdict changes and thresholds marked.

A run is a :class:`Series`: the ``analyze`` report dict and its legend label. Used by
``analyze --plot`` (one run, every metric) and ``compare --plot`` (runs overlaid, the story).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from alignctl.errors import InputError
from alignctl.report.figures import COLORS, finite, literal, pyplot

# panel key -> (title, threshold key in the verdict thresholds, or None)
PANELS = {
    "accuracy": ("accuracy", "fit"),
    "centroid_alignment": ("centroid alignment cos(x, μ)", "centroid_alignment"),
    "jacobian_alignment_full": ("Jacobian alignment |J x̂|² / |J|²", "alignment_full"),
    "jacobian_alignment": ("label-row alignment cos(x, J_y)", None),
    "jacobian_norm": ("Jacobian norm |J|_F", None),
    "jacobian_erank": ("effective rank of J", "erank"),
    "jacobian_pc1": ("PC1 explained variance of J", None),
    "centroid_norm": ("centroid norm |μ|", None),
    "centroid_inner": ("centroid inner product ⟨x, μ⟩", None),
    "jacobian_inner": ("label-row inner product ⟨x, J_y⟩", None),
    "local_complexity": ("local complexity", None),
    "centred_label_alignment": ("centred label-row alignment cos(x, J_c,y)", None),
    "centred_label_norm": ("centred label-row norm |J_c,y|", None),
    "centred_alignment_full": ("centred Jacobian alignment |J_c x̂|² / |J_c|²", None),
    "centred_norm": ("centred Jacobian norm |J_c|_F", None),
}
STORY = ("accuracy", "centroid_alignment", "jacobian_norm", "jacobian_erank")
_ACC = (
    ("train_accuracy", "--", "train"),
    ("test_accuracy", "-", "test"),
    ("adversarial_accuracy", ":", "adversarial"),
    ("noise_accuracy", "-.", "noise"),
)


@dataclass
class Series:
    label: str  # the legend: the regulariser, or the run's name
    report: dict  # an ``analyze`` report
    color: str = COLORS[0]

    @property
    def steps(self) -> list[int]:
        return [c["step"] for c in self.report["checkpoints"]]


def available(runs: list[Series], wanted=None) -> list[str]:
    """The panels to draw, among those some run has: ``wanted``; by default the story for
    several runs, every metric for one."""
    from alignctl.report.cells import metric_names  # without metric_names: those held

    names = [n for s in runs for n in metric_names(s.report)]
    if wanted:
        keys = list(wanted)
        missing = [k for k in keys if k != "accuracy" and k not in names]
        if missing:
            have = ", ".join(dict.fromkeys(names)) or "none"
            raise InputError(f"no run has the metric of panel {missing[0]!r} (measured: {have}); "
                             "measure it with --metrics")  # fmt: skip
    elif len(runs) > 1:
        keys = list(STORY)
    else:  # one run: every metric it has, known ones in the panel order, then the rest
        keys = list(PANELS) + [n for n in names if n not in PANELS]
    return [k for k in keys if k == "accuracy" or k in names]


def step_label(runs: list[Series]) -> str:
    """The step axis' label: what the runs' steps count (``report.step_unit``, one of
    :mod:`alignctl.report.steps`' units, ``mixed`` or None), the same for all runs or mixed."""
    from alignctl.report import steps

    names = {steps.OPTIMISER: "optimiser steps", steps.INDEX: "checkpoint index",
             steps.METADATA: "step (from checkpoint metadata)",
             steps.NAME: "step (number in checkpoint name)"}  # fmt: skip
    found = {s.report.get("step_unit") for s in runs}
    known = found - {None}  # None: the run does not say (a monitor's log)
    unit = "mixed" if len(known) > 1 else (known.pop() if known and None not in found else None)
    if unit is None:
        label = "step"
    else:
        label = names.get(unit, f"step ({'mixed units' if unit == 'mixed' else literal(unit)})")
    return f"{label} (checkpoints marked)"


def _metric(ax, s: Series, key: str, one_run: bool) -> None:
    cks = s.report["checkpoints"]
    mean = [finite(_held(c.get("metrics"), key)) for c in cks]
    std = [finite(_held(c.get("metrics_std"), key)) for c in cks]
    ax.plot(s.steps, mean, "-o", color=s.color, ms=2.5, lw=1.2, label=None if one_run else s.label)
    lo = [m - d for m, d in zip(mean, std, strict=True)]
    hi = [m + d for m, d in zip(mean, std, strict=True)]
    ax.fill_between(s.steps, lo, hi, color=s.color, alpha=0.15, lw=0)


def _held(values, key: str):
    """``values[key]`` when ``values`` is a mapping (a report's null metrics: None)."""
    return values.get(key) if isinstance(values, dict) else None


def _accuracy(ax, s: Series, one_run: bool) -> None:
    cks = s.report["checkpoints"]
    for key, style, name in _ACC:
        vals = [finite(c.get(key)) for c in cks]
        if any(v == v for v in vals):  # some value is not NaN
            color = COLORS[_ACC.index((key, style, name)) + 1] if one_run else s.color
            label = f"{name} accuracy" if one_run else f"{s.label} {name}"
            ax.plot(s.steps, vals, style, marker="o", ms=2.5, lw=1.2, color=color, label=label)
    ax.set_ylim(-0.02, 1.02)


def verdict_changes(report: dict) -> list[tuple[int, str]]:
    """(step, new verdict) wherever the verdict differs from the previous checkpoint's (a
    report without verdicts, or with odd ones, shows them as text)."""
    cks, out = report["checkpoints"], []
    for prev, ck in zip(cks, cks[1:], strict=False):
        if ck.get("verdict") != prev.get("verdict"):
            out.append((ck["step"], "-" if ck.get("verdict") is None else str(ck["verdict"])))
    return out


def _thresholds(report: dict) -> dict:
    from alignctl.report.verdict import DEFAULTS

    return {**DEFAULTS, **(report.get("thresholds") or {})}


def _free_end(ax, value: float) -> float:
    """0.0 or 1.0: the end of a horizontal line at ``value`` (axes fraction) whose outer
    quarter the plotted curves keep further from it, so that its label does not sit on them."""
    import numpy as np

    to_axes = ax.transData + ax.transAxes.inverted()
    level = to_axes.transform([(ax.get_xlim()[0], value)])[0, 1]
    gap = {0.0: np.inf, 1.0: np.inf}
    for line in ax.get_lines():
        if line.get_transform() is not ax.transData:  # verdict marks and thresholds
            continue
        xy = np.asarray(line.get_xydata(), float)
        xy = to_axes.transform(xy[np.isfinite(xy).all(1)]) if len(xy) else xy
        if len(xy) < 1:
            continue
        xy = xy[np.argsort(xy[:, 0])]
        for end, span in ((0.0, (0.0, 0.25)), (1.0, (0.75, 1.0))):
            xs = np.linspace(*span, 40)
            xs = xs[(xs >= xy[0, 0]) & (xs <= xy[-1, 0])]
            if len(xs):
                gap[end] = min(gap[end], float(np.abs(np.interp(xs, *xy.T) - level).min()))
    return 1.0 if gap[1.0] >= gap[0.0] else 0.0


def _threshold(ax, name: str, value: float) -> None:
    """A dashed line at a verdict threshold, when it lies within the data's range (a far one
    would squash the curves), labelled at the end the curves leave free."""
    lo, hi = ax.get_ylim()
    if lo <= value <= hi:
        ax.axhline(value, color="0.4", ls="--", lw=0.7)
        end = _free_end(ax, value)
        ax.annotate(f"{name} {value:g}", (end, value), xycoords=("axes fraction", "data"),
                    xytext=(-2 if end else 2, 1), textcoords="offset points", va="bottom",
                    ha="right" if end else "left", fontsize=6, color="0.35")  # fmt: skip
        ax.set_ylim(lo, hi)


def log_spaced(steps: list) -> bool:
    """Whether checkpoints read best on a log step axis: they span two decades or more and
    are spread evenly in log(step) rather than in step (their median step is nearer, in
    log terms, to the geometric than to the arithmetic middle of the span). Evenly spaced
    ones (a monitor every 100 steps, 200 checkpoints one step apart) stay linear: on a log
    axis their later half was squeezed into a fifth of the width."""
    import math
    import statistics

    positive = sorted(st for st in steps if st > 0)
    if not positive or min(steps) < 0 or positive[-1] < 100 * positive[0]:
        return False
    lo, hi, median = positive[0], positive[-1], statistics.median(positive)
    geometric, arithmetic = math.sqrt(lo * hi), (lo + hi) / 2
    return abs(math.log(median / geometric)) < abs(math.log(median / arithmetic))


def draw_panels(axes, runs: list[Series], panels: list[str]) -> None:
    """Fill one axis per panel key."""
    one = len(runs) == 1
    for ax, key in zip(axes, panels, strict=False):
        for s in runs:
            if key == "accuracy":
                _accuracy(ax, s, one)
            else:
                _metric(ax, s, key, one)
            for step, verdict in verdict_changes(s.report):
                ax.axvline(step, color=s.color, ls=":", lw=0.8, alpha=0.7)
                if key == panels[0]:
                    ax.annotate(literal(verdict), (step, 0.03), xycoords=("data", "axes fraction"),
                                rotation=90, va="bottom", ha="right", fontsize=6,
                                color=s.color)  # fmt: skip
        title, tkey = PANELS.get(key, (literal(key), None))  # a user's metric: its name
        ax.set_title(title, loc="left")
        if log_spaced([st for s in runs for st in s.steps]):
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xlim(left=0)
        thresholds = _thresholds(runs[0].report)
        if tkey is not None and tkey in thresholds:  # the 0.2 rules dropped some thresholds
            _threshold(ax, tkey, thresholds[tkey])


def trajectories_figure(runs: list[Series], panels=None, title: str = "", extra_rows: int = 0):
    """(figure, [(wide axis, narrow axis)] for each of ``extra_rows`` rows below the panels)."""
    plt = pyplot()
    keys = available(runs, panels)
    ncols = 2 if len(keys) <= 4 else 3
    nrows = -(-len(keys) // ncols)
    fig = plt.figure(figsize=(3.6 * ncols, 2.5 * (nrows + extra_rows) + 0.5))
    grid = fig.add_gridspec(nrows + extra_rows, ncols)
    axes = [fig.add_subplot(grid[i // ncols, i % ncols]) for i in range(len(keys))]
    for ax in axes[1:]:
        ax.sharex(axes[0])
    draw_panels(axes, runs, keys)
    label = step_label(runs)
    for ax in axes[-ncols:]:
        ax.set_xlabel(label)
    spare = [(fig.add_subplot(grid[nrows + r, : ncols - 1]), fig.add_subplot(grid[nrows + r, -1]))
             for r in range(extra_rows)]  # fmt: skip
    finish_layout(fig, title)
    return fig, spare


def finish_layout(fig, title: str) -> None:
    """Panels laid out tight, then above them (where they cover no curve and no verdict label)
    the legend of the first panel and the title, each in as many columns or lines as fit the
    panels' width: long run names on one line made the saved figure grow around narrow
    panels. Call again after drawing into more axes (it replaces both)."""
    for legend in list(fig.legends):
        legend.remove()
    fig.suptitle("")  # laid out without the old title
    fig.tight_layout()
    handles, labels = fig.axes[0].get_legend_handles_labels()
    labels = [literal(x) for x in labels]  # run labels: folder names, regularisers
    renderer, width_px = fig.canvas.get_renderer(), fig.bbox.width
    top = max(ax.get_tightbbox(renderer).y1 for ax in fig.axes) / fig.bbox.height
    for ncol in range(min(4, len(labels)), 0, -1):
        legend = fig.legend(handles, labels, loc="lower center", frameon=False,
                            bbox_to_anchor=(0.5, top), ncol=ncol)  # fmt: skip
        if ncol == 1 or legend.get_window_extent(renderer).width <= width_px:
            top = legend.get_window_extent(renderer).transformed(fig.transFigure.inverted()).y1
            break
        legend.remove()
    chars = int(fig.get_figwidth() * 72 // (0.6 * 10))  # 10 pt characters per line, about
    title = textwrap.fill(title, max(20, chars), break_long_words=False, break_on_hyphens=False)
    title = literal(title)  # run names and verdicts (and --title) are drawn as written
    fig.suptitle(title, y=top + 0.05 / fig.get_figheight(), va="bottom", fontsize=10)
