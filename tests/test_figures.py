"""Figures and `alignctl compare` / `alignctl geometry` / `analyze --plot`: headless (Agg), valid
PNG/SVG/PDF files, matched-step differences, Markdown that a real parser reads, bad input."""

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from safetensors.torch import save_file
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.report.compare import comparison, series, to_markdown
from alignctl.report.figures.pages import plot_runs
from alignctl.report.figures.trajectories import Series, verdict_changes

runner = CliRunner()


def tiny_run(root: Path, *, regs=None, steps=(0, 5, 50), activation="relu", seed=0) -> Path:
    """A run directory: an MLP 6-8-3 config, .npz data and one checkpoint per step."""
    from alignctl.runs.models import build_model

    root.mkdir(parents=True)
    g = np.random.default_rng(seed)
    x = g.normal(size=(40, 6)).astype(np.float32)
    y = ((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)).astype(np.int64)
    np.savez(root / "data.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    model = {"arch": "mlp", "in_features": 6, "hidden": [8], "out_features": 3,
             "activation": activation}  # fmt: skip
    cfg = {"model": model, "data": {"path": "data.npz"}}
    if regs is not None:
        cfg["train"] = {"regularisers": regs}
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    (root / "checkpoints").mkdir()
    torch.manual_seed(seed)
    net = build_model(model, root)
    for s in steps:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
        save_file(dict(net.state_dict()), str(root / "checkpoints" / f"step_{s:08d}.safetensors"))
    return root


def report(path: str, steps, *, seed=0, regs=None, samples=False) -> dict:
    """A synthetic analyze report with the fields compare and the figures read."""
    g = np.random.default_rng(seed)
    names = ["centroid_alignment", "jacobian_norm", "jacobian_erank"]
    cks = []
    for i, s in enumerate(steps):
        cks.append({"name": f"step_{s}", "step": s, "train_accuracy": min(1.0, 0.3 + 0.2 * i),
                    "test_accuracy": 0.25 + 0.1 * i, "verdict": "learning" if i < 2 else
                    "generalising", "metrics": {n: float(g.normal()) for n in names},
                    "metrics_std": {n: 0.1 for n in names}})  # fmt: skip
    rep = {"path": path, "metric_names": names, "checkpoints": cks, "verdict": cks[-1]["verdict"],
           "regularisers": regs or [], "step_unit": "optimiser step"}  # fmt: skip
    if samples:
        per_ck = [{n: g.normal(size=4).tolist() for n in names} for _ in cks]
        rep["samples"] = {"labels": [0, 1, 1, 2], "indices": [0, 1, 2, 3], "metrics": per_ck}
    return rep


def assert_valid(path: Path) -> None:
    data = path.read_bytes()
    if path.suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    elif path.suffix == ".svg":
        assert ET.fromstring(data).tag.endswith("svg")
    else:
        assert data.startswith(b"%PDF-")


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_figures_are_valid_files_in_every_format(tmp_path, suffix):
    import matplotlib

    runs = series([report("/x/base", [0, 10, 100]), report("/x/ga", [0, 12, 50], seed=1,
                   regs=[{"name": "grokalign", "lambda": 0.1}], samples=True)])  # fmt: skip
    runs[0].report["samples"] = runs[1].report["samples"]
    out = tmp_path / f"fig{suffix}"
    plot_runs(runs, out, title="t", dist="centroid_alignment", at=[0, 100])
    assert_valid(out)
    assert matplotlib.get_backend().lower() == "agg"


def test_matched_steps_are_nearest_and_differences_are_other_minus_reference():
    a = report("/x/a", [0, 10, 100])
    b = report("/x/b", [0, 12, 50], seed=1, regs=[{"name": "grokalign", "lambda": 0.1}])
    runs = series([a, b])
    assert [s.label for s in runs] == ["baseline", "grokalign λ=0.1"]
    cmp = comparison(runs)
    assert [r["steps"] for r in cmp["rows"]] == [[0, 0], [10, 12], [100, 50]]
    assert [r["exact"] for r in cmp["rows"]] == [True, False, False]
    for row, ca, cb in zip(cmp["rows"], a["checkpoints"], [b["checkpoints"][i] for i in (0, 1, 2)],
                           strict=True):  # fmt: skip
        want = cb["metrics"]["jacobian_norm"] - ca["metrics"]["jacobian_norm"]
        assert row["diff"]["jacobian_norm"] == [None, pytest.approx(want)]
    assert cmp["last"]["steps"] == [100, 50]
    assert series([a, report("/y/a", [0])])[1].label == "baseline (y/a)"  # same label and name


def test_verdict_changes():
    rep = report("/x", [0, 1, 2, 3])
    assert verdict_changes(rep) == [(2, "generalising")]


_value = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=6, unique=True),
       st.lists(st.integers(0, 10**6), min_size=1, max_size=6, unique=True),
       st.lists(_value, min_size=12, max_size=12))  # fmt: skip
def test_markdown_table_has_one_row_per_run_and_matched_step(steps_a, steps_b, values):
    a, b = report("/r/a|b", sorted(steps_a)), report("/r/c", sorted(steps_b), seed=2)
    for i, ck in enumerate(a["checkpoints"] + b["checkpoints"]):
        ck["metrics"]["jacobian_norm"] = values[i % len(values)]
    text = to_markdown(comparison(series([a, b])))
    tokens = MarkdownIt().enable("table").parse(text)
    rows = [t for t in tokens if t.type == "tr_open"]
    assert len(rows) == 1 + 2 * (len(steps_a) + 1)  # header, then per step and last: two runs
    json.dumps(comparison(series([a, b])), allow_nan=False)


def test_compare_cli_on_run_directories(tmp_path):
    a = tiny_run(tmp_path / "base")
    b = tiny_run(tmp_path / "ga", regs=[{"name": "grokalign", "lambda": 0.1}], steps=(0, 4, 40))
    md, fig = tmp_path / "out" / "cmp.md", tmp_path / "figs" / "cmp.png"
    args = ["--json", "-", "--markdown", str(md), "--plot", str(fig)]
    args += ["--dist", "centroid_alignment", "--at", "0,50"]
    r = runner.invoke(app, ["compare", str(a), str(b), *args])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert [x["label"] for x in result["runs"]] == ["baseline", "grokalign λ=0.1"]
    units = [x["step_unit"] for x in result["runs"]]
    assert units[0] == units[1] and units[0]  # what the steps count (report.step_unit)
    assert [row["steps"] for row in result["rows"]] == [[0, 0], [5, 4], [50, 40]]
    assert_valid(fig)
    text = md.read_text()
    assert "![alignctl compare](../figs/cmp.png)" in text
    assert any(t.type == "table_open" for t in MarkdownIt().enable("table").parse(text))


def test_compare_cli_on_reports_and_the_table(tmp_path):
    a, b = tiny_run(tmp_path / "a"), tiny_run(tmp_path / "b", seed=1)
    for run in (a, b):
        r = runner.invoke(app, ["analyze", str(run), "--json", str(run / "r.json"), "-q",
                                "--keep-samples"])  # fmt: skip
        assert r.exit_code == 0, r.output
    saved = json.loads((a / "r.json").read_text())
    assert len(saved["samples"]["labels"]) == 30
    assert len(saved["samples"]["metrics"][0]["centroid_alignment"]) == 30
    r = runner.invoke(app, ["compare", str(a / "r.json"), str(b / "r.json")])
    assert r.exit_code == 0, r.output
    assert "baseline (a)" in r.stdout and "baseline (b)" in r.stdout and "last 50" in r.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["ONE"], "at least two runs"),
        (["ONE", "TWO", "--plot", "f.gif"], ".png, .svg or .pdf"),
        (["ONE", "BAD"], "not an alignctl analyze report"),
        (["ONE", "TWO", "--plot", "f.png", "--dist", "centroid_alignment"], "--keep-samples"),
        (["ONE", "TWO", "--panels", "nope"], "unknown panel"),
        (["ONE", "TWO", "--at", "x"], "whole numbers"),
    ],
)
def test_compare_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "one.json").write_text(json.dumps(report(str(tmp_path / "one"), [0, 1])))
    (tmp_path / "two.json").write_text(json.dumps(report(str(tmp_path / "two"), [0, 1])))
    (tmp_path / "bad.json").write_text("{}")
    names = {"ONE": "one.json", "TWO": "two.json", "BAD": "bad.json"}
    argv = [str(tmp_path / names[a]) if a in names else a for a in args]
    argv = [str(tmp_path / a) if a.startswith("f.") else a for a in argv]
    r = runner.invoke(app, ["compare", *argv])
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and message in r.stderr and r.stderr.count("\n") == 1
    assert not list(tmp_path.glob("f.*"))


def test_analyze_plot_with_distribution_and_markdown_link(tmp_path):
    run = tiny_run(tmp_path / "run")
    fig, md = tmp_path / "a.pdf", tmp_path / "md" / "a.md"
    r = runner.invoke(app, ["analyze", str(run), "--plot", str(fig), "--markdown", str(md), "-q",
                            "--dist", "jacobian_norm", "--at", "0,5"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert_valid(fig)
    assert "![alignctl analyze](../a.pdf)" in md.read_text()
    r = runner.invoke(app, ["analyze", str(run), "--dist", "jacobian_norm"])
    assert r.exit_code == 2 and "needs --plot" in r.stderr


def test_geometry_cli_two_steps_and_json(tmp_path):
    run = tiny_run(tmp_path / "run")
    out = tmp_path / "g.png"
    r = runner.invoke(app, ["geometry", str(run), "--steps", "0,50", "--samples", "0,1,2",
                            "--out", str(out), "--resolution", "64", "--json", "-"])  # fmt: skip
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert [s["step"] for s in summary] == [0, 50]
    assert all(s["piecewise_linear"] and s["regions"] >= 1 for s in summary)
    assert_valid(out)
    mu = torch.tensor(summary[0]["centroids"])
    assert mu.shape == (3, 6) and torch.isfinite(mu).all()


def test_geometry_cli_smooth_network_and_bad_input(tmp_path):
    run = tiny_run(tmp_path / "run", activation="tanh")
    out = tmp_path / "g.svg"
    r = runner.invoke(app, ["geometry", str(run), "--out", str(out), "--resolution", "32"])
    assert r.exit_code == 0, r.output
    assert "not piecewise linear (Tanh)" in r.stdout
    assert_valid(out)
    for args, msg in [(["--step", "7"], "no checkpoint at step 7"),
                      (["--samples", "0,0,1"], "three different"),
                      (["--samples", "0,1"], "exactly three")]:  # fmt: skip
        r = runner.invoke(app, ["geometry", str(run), "--out", str(tmp_path / "x.png"), *args])
        assert r.exit_code == 2 and msg in r.stderr, r.output
    assert not (tmp_path / "x.png").exists()


def test_geometry_draws_image_centroids(tmp_path):
    from alignctl.report.figures.figure1 import image_shape
    from alignctl.runs.tasks import Dataset

    assert image_shape(Dataset(torch.zeros(2, 64), torch.zeros(2).long(), name="digits")) == (8, 8)
    assert image_shape(Dataset(torch.zeros(2, 1, 5, 5), torch.zeros(2).long())) == (1, 5, 5)
    assert image_shape(Dataset(torch.zeros(2, 64), torch.zeros(2).long(), name="x")) is None
    run = tiny_run(tmp_path / "run")
    out = tmp_path / "g.png"
    r = runner.invoke(app, ["geometry", str(run), "--out", str(out), "--resolution", "32",
                            "--image-shape", "2,3"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert_valid(out)
    assert math.isfinite(out.stat().st_size)


def test_series_defaults_to_run_name_without_regulariser_info():
    rep = report("/runs/mine", [0])
    del rep["regularisers"]
    assert series([rep])[0].label == "mine"
    assert isinstance(series([rep])[0], Series)
