"""--max-rise METRIC=DELTA: the mirror of --max-drop for metrics where larger is the
regression (jacobian_norm: GrokAlign keeps it small). qa12b: a drop gate on such a metric
never caught a rise."""

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.report.cells import gate_text
from alignctl.report.gates import check_gate_options, evaluate_gates

NAMES = ["jacobian_norm", "centroid_alignment"]


def report(v: float) -> dict:
    return {"checkpoints": [{"step": 10, "metrics": {"jacobian_norm": v},
                             "train_accuracy": 1.0, "test_accuracy": 0.9}],
            "metric_names": NAMES, "verdict": "generalising"}  # fmt: skip


def baseline(tmp_path, b: float):
    path = tmp_path / "base.json"
    path.write_text(json.dumps(report(b)))
    return path


finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(v=finite, b=finite, delta=st.floats(0, 1e6, allow_nan=False))
def test_a_rise_gate_passes_exactly_when_the_rise_is_at_most_delta(tmp_path_factory, v, b,
                                                                    delta):  # fmt: skip
    path = baseline(tmp_path_factory.mktemp("b"), b)
    (g,) = evaluate_gates(report(v), baseline=path, max_rise=[f"jacobian_norm={delta!r}"])
    # the rise of the numbers as written (JSON's shortest forms), exactly: binary v - b
    # failed a rise of 0.02 from 0.948 to 0.968
    rise = Decimal(repr(v)) - Decimal(repr(b))
    assert g["passed"] == (rise <= Decimal(repr(delta)))
    assert g["rise"] == float(rise) and g["baseline"] == b and g["max_rise"] == delta
    assert "rise" in gate_text(g) and "drop" not in gate_text(g)


def test_rise_and_drop_gates_side_by_side(tmp_path):
    path = baseline(tmp_path, 2.0)
    drop, rise = evaluate_gates(report(15.0), baseline=path, max_drop=["jacobian_norm=1"],
                                max_rise=["jacobian_norm=1"])  # fmt: skip
    assert drop["passed"] and not rise["passed"]  # a 13-unit rise is no drop
    assert gate_text(rise).endswith("value 15, baseline 2, rise 13")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_rise": ["jacobian_norm=1"]}, "--max-rise needs --baseline"),
        ({"max_rise": ["jacobian_norm=-1"], "baseline": "B"}, "largest rise allowed, >= 0"),
        ({"max_rise": ["test_accuracy=5"], "baseline": "B"}, r"fractions in \[0, 1\]"),
        ({"max_rise": ["nope=1"], "baseline": "B"}, "unknown metric"),
        ({"baseline": "B"}, "--max-drop / --max-rise"),
    ],
)
def test_bad_rise_gates_are_usage_errors(tmp_path, kwargs, match):
    if kwargs.get("baseline") == "B":
        kwargs["baseline"] = baseline(tmp_path, 1.0)
    with pytest.raises(InputError, match=match):
        check_gate_options(NAMES, **kwargs)


def test_cli_rise_gate_fails_with_exit_1(tmp_path):
    run = str(Path(__file__).parents[1] / "examples/checkpoints/sparse-parity-baseline")
    path = baseline(tmp_path, 2.0)
    r = CliRunner().invoke(app, ["analyze", run, "--metrics", "standard", "--no-cache",
                                 "--baseline", str(path), "--max-rise", "jacobian_norm=0.5",
                                 "-q"])  # fmt: skip
    assert r.exit_code == 1, r.stderr
    assert "jacobian_norm rise from baseline <= 0.5" in r.stderr and "rise " in r.stderr


# --- declared metric ranges (Metric.bounds), generated from the registry -------------------
from alignctl.geometry.metrics import METRICS  # noqa: E402

BOUNDED = [m for m in METRICS.names() if METRICS.get(m).bounds != (-float("inf"), float("inf"))]


def test_the_registry_declares_ranges():
    assert {"centroid_alignment", "jacobian_norm", "jacobian_pc1"} <= set(BOUNDED)


@pytest.mark.parametrize("name", BOUNDED)
def test_a_threshold_outside_a_metrics_range_is_a_usage_error(name):
    lo, hi = METRICS.get(name).bounds
    outside = [v for v in (lo - 0.5, hi + 0.5) if abs(v) != float("inf")]
    for v in outside:
        for option in ("fail_under", "fail_over"):
            with pytest.raises(InputError, match=f"{name} lies in"):
                check_gate_options([name], **{option: [f"{name}={v}"]})
    for v in (lo, hi):  # the ends themselves are thresholds a value can meet
        if abs(v) != float("inf"):
            check_gate_options([name], fail_under=[f"{name}={v}"], fail_over=[f"{name}={v}"])
    if hi - lo < float("inf"):
        with pytest.raises(InputError, match="never fails"):
            check_gate_options([name], max_rise=[f"{name}={hi - lo + 0.5}"], baseline=None)


def test_measured_values_lie_in_the_declared_ranges():
    """The ranges are claims about the metrics: every value measured on random networks of
    three shapes (and an all-zero one) lies inside them."""
    import torch

    import alignctl

    torch.manual_seed(0)
    nets = [
        torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 4)),
        torch.nn.Sequential(torch.nn.Linear(6, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1)),
        torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 7)),
    ]
    zero = torch.nn.Linear(6, 4)
    torch.nn.init.zeros_(zero.weight)
    for net in [*nets, zero]:
        x = torch.randn(32, 6)
        c = net(x[:1]).shape[-1]
        y = torch.randint(0, max(c, 2), (32,))
        values = alignctl.measure(
            net, x, y, metrics=[m for m in BOUNDED if not METRICS.get(m).opt_in]
        )
        for name, v in values.items():
            lo, hi = METRICS.get(name).bounds
            assert bool(((v >= lo - 1e-6) & (v <= hi + 1e-6)).all()), (name, v)
