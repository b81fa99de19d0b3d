"""Figure keys and titles that stay readable: the per-class panel's legend keys show each
step's dash pattern, and long run names wrap inside the figure above the panels."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from alignctl.report.figures.distributions import draw_distribution  # noqa: E402
from alignctl.report.figures.trajectories import Series  # noqa: E402


def test_per_class_legend_keys_show_each_steps_dash_pattern():
    steps = [0, 10, 20, 30]
    g = np.random.default_rng(0)
    per_ck = [{"jacobian_norm": g.random(6).tolist()} for _ in steps]
    samples = {"labels": [0, 1, 2] * 2, "indices": list(range(6)), "metrics": per_ck}
    cks = [{"step": s, "metrics": {}} for s in steps]
    rep = {"path": "r", "metric_names": ["jacobian_norm"], "checkpoints": cks, "samples": samples}
    fig, (violins, classes) = plt.subplots(1, 2)
    try:
        draw_distribution(violins, classes, [Series("r", rep, "C0")], "jacobian_norm", steps)
        fig.canvas.draw()
        keys = classes.get_legend().get_lines()
        assert len({k.get_linestyle() for k in keys}) == len(steps)
        for key in keys:
            x = key.get_xdata()  # points
            side = (x.max() - x.min()) / 2 - key.get_markersize() / 2
            _, dashes = key._dash_pattern  # scaled by the line width; None when solid
            assert dashes is None or side >= sum(dashes), (key.get_linestyle(), side, dashes)
    finally:
        plt.close(fig)


def test_long_run_names_wrap_inside_the_figure_above_the_panels():
    """Three runs with long folder names: the legend and the title are no wider than the
    panels (one line each made the saved figure grow around narrow panels), the legend sits
    above every panel title and the title above the legend."""
    from test_figures import report

    from alignctl.report.compare import series
    from alignctl.report.figures.trajectories import trajectories_figure

    names = ["a-very-long-experiment-name-for-the-baseline-run-with-seed-0000",
             "another-very-long-experiment-name-baseline-run-with-seed-0001", "third"]  # fmt: skip
    runs = series([report(f"/runs/{n}", [0, 10, 100]) for n in names])
    fig, _ = trajectories_figure(runs, title=" vs ".join(s.label for s in runs))
    try:
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        (legend,) = fig.legends
        title, lbox = fig._suptitle.get_window_extent(r), legend.get_window_extent(r)
        assert lbox.width <= fig.bbox.width and title.width <= fig.bbox.width
        assert title.y0 >= lbox.y1
        assert all(lbox.y0 >= ax.title.get_window_extent(r).y1 for ax in fig.axes)
    finally:
        plt.close(fig)
