"""Held-out CI gate and report checks (third QA pass on issues 4, 12 and 15): gates at their
exact boundaries (a drop equal to --max-drop in decimal passes, whatever binary rounding
makes of the subtraction), rule texts that state the threshold compared, failure lines whose
numbers tell the value from its limit."""

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.report.cells import gate_text
from alignctl.report.gates import evaluate_gates

EXAMPLE = Path(__file__).resolve().parents[1] / "examples/checkpoints/sparse-parity-grokalign"
FAST = ["--metrics", "fast", "--samples", "64", "--no-cache"]
runner = CliRunner()


def invoke(*args, run=EXAMPLE):
    return runner.invoke(app, ["analyze", str(run), "-q", *FAST, *map(str, args)])


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("base") / "base.json"
    r = invoke("--json", out)
    assert r.exit_code == 0, r.stderr
    return json.loads(out.read_text())


def _report(value: float) -> dict:
    ck = {"name": "c", "step": 1, "metrics": {"centroid_alignment": 0.0},
          "train_accuracy": 1.0, "test_accuracy": value, "verdict": "generalising"}  # fmt: skip
    return {"checkpoints": [ck], "metric_names": ["centroid_alignment"],
            "verdict": "generalising"}  # fmt: skip


thousandths = st.integers(0, 1000).map(lambda i: Decimal(i) / 1000)


@settings(max_examples=200, deadline=None)
@given(now=thousandths, delta=thousandths)
def test_a_change_equal_to_the_limit_in_decimal_passes(tmp_path_factory, now, delta):
    """--max-drop / --max-rise METRIC=DELTA pass when the change is DELTA as written (0.988 ->
    0.968 with 0.02 failed: binary 0.988 - 0.968 = 0.020000000000000018) and fail one
    thousandth beyond."""
    folder = tmp_path_factory.mktemp("b")
    for sign, option in ((1, "max_drop"), (-1, "max_rise")):
        before = now + sign * delta
        if not 0 <= before <= 1:
            continue
        path = folder / f"{option}.json"
        path.write_text(json.dumps(_report(float(before))))
        passed = evaluate_gates(_report(float(now)), baseline=path,
                                **{option: [f"test_accuracy={delta}"]})  # fmt: skip
        assert passed[0]["passed"], passed
        assert passed[0]["drop" if sign > 0 else "rise"] == float(delta)
        if delta >= Decimal("0.001"):
            tighter = delta - Decimal("0.001")
            failed = evaluate_gates(_report(float(now)), baseline=path,
                                    **{option: [f"test_accuracy={tighter}"]})  # fmt: skip
            assert not failed[0]["passed"], failed
            rule, shown = gate_text(failed[0]).split(": ", 1)
            limit, change = rule.split()[-1], shown.split(", ")[-1].split()[-1]
            assert float(limit) == float(tighter) and float(change) == float(delta), shown


def test_max_drop_at_its_boundary_from_the_cli(tmp_path, base):
    """The CLI on a real run: a baseline exactly 0.02 above this run's test accuracy."""
    now = base["checkpoints"][-1]["test_accuracy"]
    before = dict(base)
    before["checkpoints"] = [dict(c) for c in base["checkpoints"]]
    before["checkpoints"][-1]["test_accuracy"] = float(Decimal(repr(now)) + Decimal("0.02"))
    path = tmp_path / "before.json"
    path.write_text(json.dumps(before))
    r = invoke("--baseline", path, "--max-drop", "test_accuracy=0.02")
    assert r.exit_code == 0, r.stderr
    r = invoke("--baseline", path, "--max-drop", "test_accuracy=0.019")
    assert r.exit_code == 1 and "drop 0.02" in r.stderr, r.stderr


def test_the_rule_states_the_threshold_compared(base):
    """%g cut --fail-under jacobian_norm=2.2084874037504196 to the rule 'jacobian_norm >=
    2.20849', which a value of 2.208487 then passed."""
    v = base["checkpoints"][-1]["metrics"]["centroid_norm"]
    r = invoke("--fail-under", f"centroid_norm={v!r}", "--json", "-")
    assert r.exit_code == 0, r.stderr
    (gate,) = json.loads(r.stdout)["gates"]
    assert gate["rule"] == f"centroid_norm >= {v!r}" and gate["passed"]
    assert float(gate["rule"].split()[-1]) == gate["threshold"] == v


@pytest.mark.parametrize("option, nudge", [("--fail-under", 1e-9), ("--fail-over", -1e-9)])
def test_a_failure_line_tells_value_from_threshold(base, option, nudge):
    """'value 2.208, threshold 2.208' for a gate that failed: the line must show digits that
    differ."""
    v = base["checkpoints"][-1]["metrics"]["centroid_norm"]
    r = invoke(option, f"centroid_norm={v * (1 + nudge)!r}")
    assert r.exit_code == 1, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    value, threshold = (part.split()[-1] for part in line.split(": ", 1)[1].split(", "))
    assert value != threshold, line
    assert float(value) != float(threshold)


@given(a=st.floats(-1e6, 1e6), b=st.floats(-1e6, 1e6), near=st.booleans())
def test_gate_text_numbers_differ_when_the_numbers_do(a, b, near):
    if near:  # a limit a rounding away from the value: what %.4g showed as equal
        b = a * (1 + 1e-7) + 1e-12
    text = gate_text({"rule": "r", "value": a, "threshold": b, "passed": False})
    shown = [p.split()[-1] for p in text.split(": ", 1)[1].split(", ")]
    assert (shown[0] == shown[1]) == (a == b), text


# ---- compare's table with runs named by long folder names ----

long_word = st.text(st.sampled_from("abc_|`-019λ"), min_size=20, max_size=120)


@settings(max_examples=80, deadline=None)
@given(labels=st.lists(long_word, min_size=2, max_size=4), width=st.integers(40, 200))
def test_compare_table_with_long_run_names_fits_the_terminal(labels, width):
    """A run column never narrower than its longest word made the table 116 wide at
    COLUMNS=40 for a run whose folder name is one 90-character word: the word folds."""
    import io

    from rich.console import Console

    from alignctl.report.fit_table import fit_table

    header = ["step", "run", "verdict", "train acc", "test acc"]
    rows = [["last 400" if i == 0 else "", f"grokalign λ=0.1 ({lab})", "generalising",
             "100.0%", "96.8% (+38.5 pt)"] for i, lab in enumerate(labels)]  # fmt: skip
    table, need, hidden = fit_table(header, rows, width, keep=("step", "run", "verdict"),
                                    wraps=("run", "verdict"))  # fmt: skip
    assert need <= width
    console = Console(width=width, no_color=True, highlight=False, file=io.StringIO())
    with console.capture() as cap:
        console.print(table)
    lines = cap.get().splitlines()
    assert max(len(line) for line in lines) <= width
    folded = "".join(line.strip() for line in lines)
    for lab in labels:  # every character of every name is still there, in order
        assert lab in folded or all(ch in folded for ch in lab)


@pytest.mark.parametrize("columns", [40, 60, 80])
def test_compare_cli_with_a_long_run_name_fits(tmp_path, monkeypatch, columns):
    import shutil

    run = tmp_path / ("a|very`long`run_name_" + "x" * 70)
    shutil.copytree(EXAMPLE, run, ignore=shutil.ignore_patterns(".alignctl-cache"))
    monkeypatch.setenv("COLUMNS", str(columns))
    r = runner.invoke(app, ["compare", str(EXAMPLE), str(run), "--metrics", "fast",
                            "--samples", "64"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) <= columns, r.stdout


# ---- distributions at a checkpoint without values ----


@pytest.fixture(scope="module")
def diverged_last(tmp_path_factory) -> dict:
    """The GrokAlign example with its last checkpoint's weights set to inf, analysed with
    per-sample values kept."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    run = tmp_path_factory.mktemp("div") / "run"
    shutil.copytree(EXAMPLE, run, ignore=shutil.ignore_patterns(".alignctl-cache"))
    last = sorted((run / "checkpoints").glob("*.safetensors"))[-1]
    with safe_open(str(last), "pt") as f:
        meta = f.metadata()
    weights = load_file(str(last))
    weights["1.weight"].fill_(float("inf"))
    save_file(weights, str(last), metadata=meta)
    out = run.parent / "r.json"
    r = invoke("--json", out, "--keep-samples", run=run)
    assert r.exit_code == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["checkpoints"][-1]["verdict"] == "diverged"
    return report


def test_a_distribution_at_a_diverged_checkpoint_says_so(diverged_last):
    """--dist at a diverged step drew an empty slot, and the per-class panel's key named a
    step with no curve: the figure now says 'diverged: no values' there and keys only the
    steps drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alignctl.report.figures.distributions import draw_distribution
    from alignctl.report.figures.trajectories import Series

    fig, (ax_v, ax_c) = plt.subplots(1, 2)
    last = diverged_last["checkpoints"][-1]["step"]
    first = diverged_last["checkpoints"][0]["step"]
    draw_distribution(ax_v, ax_c, [Series("r", diverged_last)], "centroid_alignment",
                      [first, last])  # fmt: skip
    texts = [t.get_text() for t in ax_v.texts]
    assert any("diverged" in t for t in texts), texts
    keyed = [t.get_text() for t in ax_c.get_legend().get_texts()]
    assert keyed == [f"step {first}"], keyed
    assert len(ax_c.get_lines()) == 1  # one curve, one key
    plt.close(fig)


def test_the_default_distribution_steps_skip_a_diverged_end(diverged_last):
    from alignctl.report.figures.pages import default_at

    steps = [c["step"] for c in diverged_last["checkpoints"]]
    assert default_at(diverged_last) == [steps[0], steps[-2]]


# ---- the step axis of evenly spaced checkpoints ----


@settings(max_examples=100, deadline=None)
@given(start=st.integers(0, 1000), every=st.integers(1, 1000), n=st.integers(2, 300))
def test_evenly_spaced_checkpoints_get_a_linear_step_axis(start, every, n):
    """200 checkpoints one step apart (0..199), or a monitor every 100 steps for 10,000
    steps, span two decades: the axis was logarithmic, their later half squeezed."""
    from alignctl.report.figures.trajectories import log_spaced

    assert not log_spaced([start + every * i for i in range(n)])


@settings(max_examples=100, deadline=None)
@given(ratio=st.floats(1.5, 10), n=st.integers(2, 40), zero=st.booleans())
def test_log_spaced_checkpoints_over_decades_get_a_log_step_axis(ratio, n, zero):
    from alignctl.report.figures.trajectories import log_spaced

    steps = sorted({round(ratio**i) for i in range(n)})
    if steps[-1] < 100 * steps[0] or len(steps) < 3:
        return  # under two decades: linear either way
    assert log_spaced([0] * zero + steps)


def test_plot_of_200_evenly_spaced_checkpoints_is_linear(tmp_path):
    """The CLI figure on a monitor-style report (steps 0..199)."""
    import matplotlib

    matplotlib.use("Agg")
    from alignctl.report.figures.trajectories import Series, trajectories_figure

    cks = [{"name": f"s{i}", "step": i, "metrics": {"centroid_alignment": 0.01 * i},
            "metrics_std": {}, "train_accuracy": 0.5, "test_accuracy": 0.5,
            "verdict": "learning"} for i in range(200)]  # fmt: skip
    report = {"path": "r", "checkpoints": cks, "metric_names": ["centroid_alignment"]}
    fig, _ = trajectories_figure([Series("r", report)])
    assert {ax.get_xscale() for ax in fig.axes} == {"linear"}


def test_compare_markdown_heading_names_each_folder_once(tmp_path):
    """Two GrokAlign runs: their labels already end in the folder's name, which the heading
    added again ('grokalign λ=0.1 (a) (a)')."""
    from alignctl.report.compare import comparison, series, to_markdown

    cks = [{"name": "s", "step": 0, "metrics": {}, "train_accuracy": 1.0,
            "test_accuracy": 1.0, "verdict": "generalising"}]  # fmt: skip
    regs = [{"name": "grokalign", "lambda": 0.1}]
    reports = [{"path": f"/r/{n}", "checkpoints": cks, "regularisers": regs, "verdict": "x",
                "recommendation": {"action": "stop"}} for n in ("a", "b")]  # fmt: skip
    heading = to_markdown(comparison(series(reports))).splitlines()[0]
    assert heading == "### alignctl compare: grokalign λ=0.1 (a) vs grokalign λ=0.1 (b)"
    reports[1]["regularisers"] = []
    heading = to_markdown(comparison(series(reports))).splitlines()[0]
    assert heading == "### alignctl compare: grokalign λ=0.1 (a) vs baseline (b)"
