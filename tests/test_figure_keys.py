"""The per-class panel tells its steps apart by line style only: each legend key must be long
enough to show a whole dash period on each side of its marker (keys of 2 font sizes at 6 pt
drew '--', ':' and '-.' as the same solid stub)."""

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
