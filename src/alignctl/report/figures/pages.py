"""Whole figures as the commands write them: one run (``analyze --plot``) and several runs
overlaid (``compare --plot``), each optionally with a row of per-sample distributions."""

from __future__ import annotations

from pathlib import Path

from alignctl.report.figures import COLORS, check_format, save
from alignctl.report.figures.distributions import check_dist, draw_distribution
from alignctl.report.figures.trajectories import Series, finish_layout, trajectories_figure


def default_at(report: dict) -> list[int]:
    """The steps a distribution is shown at by default: the first and last checkpoints that
    have values (a run whose last checkpoint diverged has none there), else first and last."""
    cks = report["checkpoints"]
    alive = [c for c in cks if not c.get("diverged") and c.get("verdict") != "diverged"]
    steps = [c["step"] for c in (alive or cks)]
    return sorted({steps[0], steps[-1]}) if steps else []


def plot_runs(runs: list[Series], path, *, panels=None, title: str = "", dist: str | None = None,
              at: list[int] | None = None) -> None:  # fmt: skip
    """Trajectories of ``runs`` (+ the distribution of ``dist`` at steps ``at``) to ``path``
    (.png, .svg or .pdf). Raises InputError for a bad suffix or missing per-sample values."""
    check_format(path)
    if dist:
        check_dist(runs, dist)
    fig, spare = trajectories_figure(runs, panels, title, extra_rows=1 if dist else 0)
    if dist:
        draw_distribution(*spare[0], runs, dist, at or default_at(runs[0].report))
        finish_layout(fig, title)
    save(fig, path)


def plot_report(report: dict, path, *, dist: str | None = None, at=None) -> None:
    """``analyze --plot``: every metric of one run, titled with the run's name and verdict."""
    name = Path(str(report.get("path", "run"))).name or "run"
    title = f"{name}: {report.get('verdict') or '-'}"
    plot_runs([Series(name, report, COLORS[1])], path, title=title, dist=dist, at=at)
