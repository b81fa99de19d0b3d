"""What a reader sees in the figures: axis labels that say what a step counts (every unit the
report can hold), labels and legends that do not sit on the data or on each other, PNGs with
enough pixels for the 6-8 pt fonts, the slice figure's key; and geometry's bad arguments."""

import json
import struct

import numpy as np
import pytest
from test_figures import report, tiny_run
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.report import steps as units
from alignctl.report.compare import series
from alignctl.report.figures.pages import plot_runs
from alignctl.report.figures.trajectories import Series, step_label, trajectories_figure

runner = CliRunner()


@pytest.mark.parametrize(
    "unit,label",
    [
        (units.OPTIMISER, "optimiser steps"),
        (units.METADATA, "step (from checkpoint metadata)"),
        (units.NAME, "step (number in checkpoint name)"),
        (units.INDEX, "checkpoint index"),
        ("mixed", "step (mixed units)"),
        (None, "step"),
    ],
)
def test_step_axis_names_each_unit_the_report_can_hold(unit, label):
    rep = report("/x/a", [0, 1])
    rep["step_unit"] = unit
    assert step_label([Series("a", rep)]) == f"{label} (checkpoints marked)"
    other = report("/x/b", [0, 1])
    other["step_unit"] = units.OPTIMISER if unit != units.OPTIMISER else units.INDEX
    mixed = "step" if unit is None else "step (mixed units)"  # a run that does not say: 'step'
    assert step_label([Series("a", rep), Series("b", other)]) == f"{mixed} (checkpoints marked)"


def _boxes(fig):
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    return r, [t for ax in fig.axes for t in ax.texts]


def _accuracy_report(path, steps, test):
    rep = report(path, steps)
    for ck, t in zip(rep["checkpoints"], test, strict=True):
        ck["train_accuracy"], ck["test_accuracy"] = 1.0, t
    rep["checkpoints"][-1]["verdict"] = "memorising"
    return rep


@pytest.mark.parametrize("n_runs", [1, 2])
def test_labels_and_legends_do_not_overlap_the_data_or_each_other(n_runs):
    """The threshold label ('fit 0.98') goes to the end of its line that the curves leave free;
    the legend overlaps no verdict label."""
    reps = [_accuracy_report(f"/x/r{i}", [0, 10, 100, 1000], [0.5, 0.6, 0.99, 1.0])
            for i in range(n_runs)]  # fmt: skip
    fig, _ = trajectories_figure(series(reps), panels=["accuracy"])
    r, texts = _boxes(fig)
    ax = fig.axes[0]
    threshold = [t for t in texts if t.get_text().startswith("fit ")]
    assert threshold
    box = threshold[0].get_window_extent(r)
    for line in ax.get_lines():
        xy = ax.transData.transform(np.asarray(line.get_xydata(), float))
        inside = (
            (xy[:, 0] >= box.x0) & (xy[:, 0] <= box.x1) & (xy[:, 1] >= box.y0 - 3)
            & (xy[:, 1] <= box.y1 + 3)
        )  # fmt: skip
        assert not inside.any(), f"{threshold[0].get_text()!r} sits on {line.get_label()!r}"
    legends = [lg for lg in [*fig.legends, *(a.get_legend() for a in fig.axes)] if lg]
    for lg in legends:
        lbox = lg.get_window_extent(r)
        for t in texts:
            assert not lbox.overlaps(t.get_window_extent(r)), f"legend on {t.get_text()!r}"


def test_class_means_legend_has_one_entry_per_step_not_per_run_and_step():
    a = report("/x/base", [0, 10, 100], samples=True)
    b = report("/x/ga", [0, 10, 100], samples=True, regs=[{"name": "grokalign", "lambda": 0.1}])
    b["samples"] = a["samples"]
    fig, spare = trajectories_figure(series([a, b]), extra_rows=1)
    from alignctl.report.figures.distributions import draw_distribution

    draw_distribution(*spare[0], series([a, b]), "centroid_alignment", [0, 100])
    labels = [t.get_text() for t in spare[0][1].get_legend().get_texts()]
    assert labels == ["step 0", "step 100"]


def _png_size(path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_png_figures_have_print_resolution(tmp_path):
    out = tmp_path / "c.png"
    plot_runs(series([report("/x/a", [0, 10]), report("/x/b", [0, 10], seed=1)]), out)
    width, _ = _png_size(out)
    assert width >= 1200  # 6-pt labels stay legible: at least ~200 dpi for a 7-inch figure


def test_geometry_figure_has_a_key(tmp_path):
    from alignctl.report.figures.figure1 import slice_panels
    from alignctl.report.figures.slice import slice_figure
    from alignctl.runs.run import open_run

    run = open_run(tiny_run(tmp_path / "run"))
    panels, _ = slice_panels(run, None, [0, 1, 2], resolution=32)
    fig = slice_figure(panels)
    texts = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert any("decision boundary" in t for t in texts)
    assert any("linear region" in t for t in texts)
    assert any("centroid" in t for t in texts)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--pad", "inf"], "--pad"),
        (["--pad", "1e300"], "--pad"),
        (["--resolution", "100000000"], "--resolution"),
        (["--image-shape", "-8,-5"], "--image-shape"),
        (["--image-shape", "2,0,3"], "--image-shape"),
        (["--image-shape", "6"], "--image-shape"),
        (["--steps", "50,50"], "different"),
    ],
)
def test_geometry_bad_numbers_are_one_line_and_exit_2(tmp_path, args, message):
    run = tiny_run(tmp_path / "run")
    out = tmp_path / "g.png"
    out.write_bytes(b"old")
    r = runner.invoke(app, ["geometry", str(run), "--out", str(out), *args])
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert message in r.stderr and "internal error" not in r.stderr
    assert out.read_bytes() == b"old"


def test_geometry_help_names_what_options_take():
    r = runner.invoke(app, ["geometry", "--help"])
    assert "--out FILE" in r.stdout and "--samples I,J,K" in r.stdout


def test_centroid_arrows_stay_inside_the_slice():
    from alignctl.report.figures.slice import _fit

    pts = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    extent = (-0.3, 1.3, -0.3, 1.3)
    for uv in (
        np.array([[0.1, 0.0], [0.0, -0.1], [-0.35, 0.1]]),
        np.array([[0, 0], [0, 0.35], [0, 0]]),
    ):
        tips = pts + _fit(pts, uv, extent) * uv
        assert (tips >= -0.3).all() and (tips <= 1.3).all()
    small = np.array([[0.05, 0.05], [0.0, 0.0], [0.0, -0.05]])
    assert _fit(pts, small, extent) == 1.0  # arrows that fit keep their length


def test_every_registered_metric_has_a_panel_title():
    from alignctl.geometry.metrics import METRICS
    from alignctl.report.figures.trajectories import PANELS

    assert not [name for name in METRICS if name not in PANELS]


def test_classes_in_one_figure_get_different_colours():
    """Class 7 and class 57 of a 61-class task met on one slice must not share a colour (the
    palette has 10): colours go to the classes the figure shows, in order."""
    from alignctl.report.figures.slice import region_image

    label = np.kron(np.array([[7, 57], [60, 7]]), np.ones((8, 8), int))  # four 8x8 blocks
    rgb = region_image(np.zeros((16, 16), int), label, classes=np.array([7, 57, 60]))
    c7, c57, c60 = rgb[0, 0], rgb[0, 15], rgb[15, 0]  # block corners: off the boundary
    assert not np.allclose(c7, c57) and not np.allclose(c57, c60) and not np.allclose(c7, c60)
    assert np.allclose(c7, rgb[15, 15])


def test_compare_takes_a_monitor_log_folder_as_analyze_does(tmp_path):
    """A folder holding only the monitor's alignment.jsonl is a run for analyze; compare too."""
    import torch

    import alignctl

    torch.manual_seed(0)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    for name in ("a", "b"):
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        with alignctl.Monitor(model, x, y, every=1, metrics="fast", out=tmp_path / name) as mon:
            for step in range(3):
                mon.step(step)
    fig = tmp_path / "c.png"
    r = runner.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "-q",
                            "--plot", str(fig), "--json", "-"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"][-1]["steps"] == [2, 2]
    assert fig.read_bytes().startswith(b"\x89PNG")


def test_every_run_gets_its_own_legend_label():
    """Runs with the same regulariser and the same folder name (seed0/run, seed1/run), or one
    run given twice (a report and its folder): the labels still differ."""
    labels = [s.label for s in series([report("/r/seed0/run", [0]), report("/r/seed1/run", [0])])]
    assert labels == ["baseline (seed0/run)", "baseline (seed1/run)"]
    labels = [s.label for s in series([report("/r/run", [0]), report("/r/run", [0])])]
    assert len(set(labels)) == 2 and all(label.startswith("baseline (run") for label in labels)
    labels = [s.label for s in series([report("/r/a", [0]), report("/r/b", [0])])]
    assert labels == ["baseline (a)", "baseline (b)"]  # unchanged where the name suffices


@pytest.mark.parametrize(
    "steps,scale", [([0, 100, 200, 300], "linear"), ([0, 1, 6, 31, 170, 400], "symlog")]
)
def test_step_axis_is_logarithmic_only_for_checkpoints_spread_over_decades(steps, scale):
    fig, _ = trajectories_figure(series([report("/x/a", steps)]), panels=["accuracy"])
    assert fig.axes[0].get_xscale() == scale


def test_a_panel_no_run_measured_is_one_error_line(tmp_path):
    a, b = tiny_run(tmp_path / "a"), tiny_run(tmp_path / "b", seed=1)
    fig = tmp_path / "c.png"
    r = runner.invoke(app, ["compare", str(a), str(b), "--panels", "local_complexity", "-q",
                            "--plot", str(fig), "--metrics", "fast"])  # fmt: skip
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "local_complexity" in r.stderr and "internal error" not in r.stderr
    assert not fig.exists()
