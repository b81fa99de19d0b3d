"""Gates that nothing can pass are usage errors (exit 2), not failed gates (exit 1): a gate on
adversarial_accuracy without --robustness, on a run directory or a monitor's log alone."""

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
