"""Held-out gate and race inputs: a gate nothing can pass (adversarial_accuracy without
--robustness, on a run directory or a monitor's log) is a usage error (exit 2), not a failed
gate (exit 1); a race run that diverged is censored in the statistical test too."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignctl.cli.assemble import app

EXAMPLE = Path(__file__).resolve().parents[1] / "examples/checkpoints/sparse-parity-grokalign"
runner = CliRunner()


def _monitor_log(root: Path) -> Path:
    line = {"step": 0, "metrics": {"centroid_alignment": 0.1}, "train_accuracy": 0.5}
    (root / "alignment.jsonl").write_text(json.dumps(line) + "\n")
    return root


@pytest.mark.parametrize("option", ["--fail-under", "--fail-over"])
@pytest.mark.parametrize("where", ["run", "monitor"])
def test_adversarial_gate_without_robustness_is_a_usage_error(tmp_path, option, where):
    run = EXAMPLE if where == "run" else _monitor_log(tmp_path)
    r = runner.invoke(app, ["analyze", str(run), "-q", option, "adversarial_accuracy=0.1"])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == f"error: {option} adversarial_accuracy needs --robustness (PGD)"
    assert "Traceback" not in r.output


def test_a_diverged_race_run_is_censored_in_the_test_as_in_the_counts():
    """A pair that grokked, then diverged: counted as not grokked (epochs = max), so the
    p-value must come from the censoring-aware test, not a paired t-test on max_epochs."""
    from alignctl.train.race import table

    results = {}
    for s, (b, g) in enumerate([(100, 60), (110, 70), (120, 50)]):
        results[("none", s)] = {"grokked_epoch": b, "train_seconds": 1.0}
        results[("grokalign", s)] = {"grokked_epoch": g, "train_seconds": 1.0}
    results[("grokalign", 2)]["status"] = "diverged"
    _, ga = table(results, ["none", "grokalign"], [0, 1, 2], 1000)
    assert ga["grokked"] == 2 and ga["diverged"] == 1 and ga["censored"]
    assert ga["test"] == "log-rank" and ga["bound"] == "upper"
