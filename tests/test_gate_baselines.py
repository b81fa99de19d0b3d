"""CI gates against hostile thresholds and baselines (the README's "CI gates"): a threshold
is a plain finite decimal, a drop is >= 0, a baseline is a strict-JSON report holding every
gated value (exit 2 otherwise), a null baseline value fails its gate saying so (exit 1), and a
baseline measured differently is named in a note."""

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from alignctl.errors import InputError
from alignctl.report.cells import gate_text
from alignctl.report.gates import evaluate_gates, parse_assignment

EXAMPLE = Path(__file__).resolve().parents[1] / "examples/checkpoints/sparse-parity-grokalign"
FAST = ["--metrics", "fast", "--samples", "64"]  # seconds, not minutes
runner = CliRunner()


def invoke(*args):
    from alignctl.cli.assemble import app

    return runner.invoke(app, ["analyze", str(EXAMPLE), "--quiet", *map(str, args)])


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("base") / "base.json"
    r = invoke(*FAST, "--no-cache", "--json", out)
    assert r.exit_code == 0, r.stderr
    return json.loads(out.read_text())


def write(tmp_path: Path, report, name="b.json") -> Path:
    p = tmp_path / name
    p.write_text(report if isinstance(report, str) else json.dumps(report))
    return p


def one_error(r, code=2) -> str:
    assert r.exit_code == code, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


# ---- thresholds: the validator, on generated text ----

_PLAIN = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=12), option=st.sampled_from(["--fail-under", "--max-drop"]))
@example(value="0\x1f", option="--fail-under")  # str.strip() drops \x1c-\x1f, float() does not
def test_threshold_values_are_plain_finite_decimals(value, option):
    """Accepted exactly when VALUE is an ASCII decimal (no '1_0', no other scripts' digits,
    no nan/inf), finite, and for a drop not negative; never any other exception."""
    plain, number = _PLAIN.fullmatch(value.strip()) is not None, _float(value)
    ok = plain and number is not None and math.isfinite(number)
    ok = ok and not (option == "--max-drop" and number < 0)
    try:
        # a metric without a range (an inner product): accuracies must also lie in [0, 1]
        # (test_gates_heldout2), bounded metrics in theirs (test_gate_rise)
        name, number = parse_assignment(f"centroid_inner={value}", option)
    except InputError:
        assert not ok
    else:
        assert ok and name == "centroid_inner" and number == float(value)


@pytest.mark.parametrize("text", ["x=1_0", "x=١", "x=0x10", "x=infinity", "x=1e400", "x=--1"])
def test_python_only_float_syntax_is_refused(text):
    with pytest.raises(InputError, match="METRIC=VALUE|finite"):
        parse_assignment(text, "--fail-under")


def test_negative_max_drop_is_an_input_error(tmp_path, base):
    msg = one_error(invoke("--baseline", write(tmp_path, base), "--max-drop", "test_accuracy=-0.1"))
    assert "--max-drop" in msg and ">= 0" in msg


# ---- baselines ----


def test_baseline_with_nan_tokens_is_not_a_report(tmp_path, base):
    text = json.dumps(base).replace(json.dumps(base["checkpoints"][-1]["test_accuracy"]), "NaN")
    assert "NaN" in text
    msg = one_error(invoke("--baseline", write(tmp_path, text), "--max-drop", "test_accuracy=0.1"))
    assert "not an alignctl analyze JSON report" in msg


@pytest.mark.parametrize("gated, hint", [
    ("jacobian_norm=0.1", "it has: centroid_alignment"),  # baseline measured with fast metrics
    ("adversarial_accuracy=0.1", "without --robustness"),
])  # fmt: skip
def test_baseline_lacking_the_gated_value_is_an_input_error(tmp_path, base, gated, hint):
    """Not exit 1 ('a regression'): the baseline was measured with another metric set."""
    msg = one_error(invoke("--baseline", write(tmp_path, base), "--max-drop", gated))
    assert "has no" in msg and hint in msg


def test_baseline_without_the_key_in_the_library_too(tmp_path, base):
    last = {"metrics": {"jacobian_norm": 1.0}, "test_accuracy": 1.0}
    report = {"metric_names": ["jacobian_norm"], "verdict": "learning", "checkpoints": [last]}
    with pytest.raises(InputError, match="has no 'jacobian_norm'"):
        evaluate_gates(report, baseline=write(tmp_path, base), max_drop=["jacobian_norm=1"])


def test_null_baseline_value_fails_its_gate_saying_so(tmp_path, base):
    nulled = json.loads(json.dumps(base))
    nulled["checkpoints"][-1]["test_accuracy"] = None  # e.g. its run had no test split
    r = invoke(*FAST, "--baseline", write(tmp_path, nulled), "--max-drop", "test_accuracy=0.5")
    assert r.exit_code == 1, r.stderr
    line = next(x for x in r.stderr.splitlines() if x.startswith("gate failed:"))
    assert "baseline -" in line and "drop -" in line


def test_gate_text_of_a_drop_gate_always_names_the_baseline():
    g = {"rule": "r", "value": 2.0, "threshold": None, "passed": False, "baseline": None,
         "drop": None, "max_drop": 0.1}  # fmt: skip
    assert gate_text(g) == "r: value 2, baseline -, drop -"


def test_baseline_measured_differently_is_noted(tmp_path, base):
    other = json.loads(json.dumps(base))
    other.update(split="test", alignctl_version="0.0.1")
    r = invoke(*FAST, "--baseline", write(tmp_path, other), "--max-drop", "centroid_alignment=2",
               "--json", tmp_path / "r.json")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    notes = json.loads((tmp_path / "r.json").read_text())["notes"]
    assert any("split 'test'" in n for n in notes) and any("'0.0.1'" in n for n in notes)
    # accuracies do not depend on the split measured: only the version is named for them
    r = invoke(*FAST, "--baseline", write(tmp_path, other), "--max-drop", "test_accuracy=1",
               "--json", tmp_path / "r.json")  # fmt: skip
    notes = json.loads((tmp_path / "r.json").read_text())["notes"]
    assert not any("split" in n for n in notes) and any("0.0.1" in n for n in notes)
