"""Held-out CI pipeline situations (second QA pass on issue 12): stdout that a pipeline takes
away (`| head`, `>&-`, a full disk) changes neither the files written nor the gates' exit
code, or is one error line (exit 2); a gate nothing can pass is a usage error (accuracy
thresholds outside [0, 1], `robust` without --robustness, a test accuracy the data cannot
have, a metric not measured); a failed output still shows the failed gates; a hand-edited
baseline's last checkpoint is its highest step, its accuracies are fractions, and a file that
is not a report says why."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from alignctl.cli.assemble import app

EXAMPLE = Path(__file__).resolve().parents[1] / "examples/checkpoints/sparse-parity-grokalign"
FAST = ["--metrics", "fast", "--samples", "64", "--no-cache"]  # seconds, not minutes
runner = CliRunner()


def invoke(*args, run=EXAMPLE):
    return runner.invoke(app, ["analyze", str(run), "-q", *FAST, *map(str, args)])


def one_error(r, code=2) -> str:
    assert r.exit_code == code, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("base") / "base.json"
    r = invoke("--json", out)
    assert r.exit_code == 0, r.stderr
    return json.loads(out.read_text())


# ---- stdout in a pipeline: real pipes and descriptors, so a real process ----


def _alignctl(tmp_path, *args, stdout, shell_prefix=""):
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="80",
               GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"))  # fmt: skip
    argv = [sys.executable, "-m", "alignctl", "analyze", str(EXAMPLE), *FAST,
            "--json", str(tmp_path / "r.json"), *args]  # fmt: skip
    if shell_prefix:  # e.g. "exec >&-": stdout closed before Python starts
        import shlex

        argv = ["bash", "-c", f"{shell_prefix}; exec {shlex.join(argv)}"]
    return subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env,
                          timeout=300)  # fmt: skip


def test_a_reader_that_goes_away_changes_neither_files_nor_exit_code(tmp_path):
    """`alignctl analyze run --json r.json | head -1` under pipefail: rich's broken-pipe
    handler exited 1 ("a gate failed") before the report or the step summary was written."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        r = _alignctl(tmp_path, "--fail-under", "test_accuracy=0.9", stdout=write)
    finally:
        os.close(write)
    assert r.returncode == 0, r.stderr  # the gate passed (a failing one: 1, as ever)
    assert r.stderr == ""
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is True
    assert "| gate | result |" in (tmp_path / "summary.md").read_text()


def test_stdout_that_cannot_take_the_data_is_one_error_after_the_files(tmp_path):
    """A full disk on stdout was "internal error ... a bug" (exit 2) and the failed gate was
    never said; a closed stdout was an AttributeError for --format json, exit 0 for the table."""
    with open("/dev/full", "w") as full:
        r = _alignctl(tmp_path, "--fail-under", "test_accuracy=0.99", stdout=full)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("gate failed: test_accuracy >= 0.99")
    assert lines[-1] == "error: cannot write stdout: No space left on device"
    assert (tmp_path / "r.json").is_file() and (tmp_path / "summary.md").is_file()

    r = _alignctl(tmp_path, "--format", "json", stdout=None, shell_prefix="exec >&-")
    assert r.returncode == 2 and r.stderr.strip() == "error: cannot write stdout: stdout is closed"
    # nothing asked of stdout (-q): a closed one is no error, the gates decide
    r = _alignctl(tmp_path, "-q", "--fail-under", "test_accuracy=0.99", stdout=None,
                  shell_prefix="exec >&-")  # fmt: skip
    assert r.returncode == 1 and "error" not in r.stderr


def test_a_failed_output_still_shows_the_failed_gates(tmp_path):
    r = invoke("--fail-under", "test_accuracy=0.99", "--csv", "/dev/full", "--json",
               tmp_path / "r.json")  # fmt: skip
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0].startswith("gate failed: test_accuracy >= 0.99: value")
    assert r.stderr.splitlines()[-1] == (
        "error: cannot write --csv /dev/full: No space left on device"
    )
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is False


# ---- gates nothing can pass (or nothing can fail): usage errors, exit 2 ----


@pytest.mark.parametrize(
    "option,text",
    [("--fail-under", "test_accuracy=90"), ("--fail-under", "train_accuracy=1.01"),
     ("--fail-over", "test_accuracy=-0.1"), ("--max-drop", "test_accuracy=2")],
)  # fmt: skip
def test_accuracy_thresholds_are_fractions(tmp_path, base, option, text):
    """The table shows 96.8%: `test_accuracy=90` never passed (exit 1, as if the model were
    bad); a drop of 2 never failed (a gate that gates nothing)."""
    extra = ["--baseline", tmp_path / "b.json"] if option == "--max-drop" else []
    (tmp_path / "b.json").write_text(json.dumps(base))
    msg = one_error(invoke(*extra, option, text))
    assert msg.endswith("accuracies are fractions in [0, 1] (0.9 for 90%)")


def test_robust_is_a_usage_error_without_robustness():
    msg = one_error(invoke("--require-verdict", "robust"))
    assert "--require-verdict robust needs --robustness" in msg


def test_a_metric_known_but_not_measured_says_so():
    msg = one_error(invoke("--fail-over", "jacobian_norm=5"))  # --metrics fast
    assert "jacobian_norm: it is not measured here" in msg
    assert "--metrics standard,jacobian_norm" in msg and "unknown" not in msg


@pytest.fixture(scope="module")
def no_test_split(tmp_path_factory) -> Path:
    """The example's network and last checkpoint on data without a test split."""
    root = tmp_path_factory.mktemp("notest")
    x = np.random.default_rng(0).integers(0, 2, (64, 40)).astype("float32")
    np.savez(root / "d.npz", x_train=x, y_train=(x[:, :3].sum(1) % 2).astype("int64"))
    (root / "alignctl.yaml").write_text(
        "model: {arch: mlp, in_features: 40, hidden: [200, 200], out_features: 2}\n"
        "data: {path: d.npz}\n"
    )
    (root / "checkpoints").mkdir()
    last = sorted((EXAMPLE / "checkpoints").glob("step_*"))[-1]
    shutil.copy(last, root / "checkpoints" / last.name)
    return root


@pytest.mark.parametrize("option", ["--fail-under", "--max-drop"])
def test_a_test_accuracy_gate_on_data_without_test_split_is_a_usage_error(
    tmp_path, base, no_test_split, option
):
    """It failed (exit 1, "value -"): no retraining could ever pass it."""
    (tmp_path / "b.json").write_text(json.dumps(base))
    extra = ["--baseline", tmp_path / "b.json"] if option == "--max-drop" else []
    msg = one_error(invoke(*extra, option, "test_accuracy=0.1", run=no_test_split))
    assert msg == "error: a gate on test_accuracy: no checkpoint of this run has one (the data " \
                  "has no test split)"  # fmt: skip
    # the train accuracy is measured: its gate is judged as usual
    r = invoke("--fail-under", "train_accuracy=0", run=no_test_split)
    assert r.exit_code == 0, r.stderr


# ---- baselines as CI jobs keep them ----


def test_baseline_last_checkpoint_is_its_highest_step(tmp_path, base):
    """A hand-merged baseline, newest first: its list-last entry (step 0, 49%) passed every
    drop gate."""
    edited = json.loads(json.dumps(base))
    edited["checkpoints"][-1]["test_accuracy"] = 0.99
    edited["checkpoints"].reverse()
    (tmp_path / "b.json").write_text(json.dumps(edited))
    r = invoke("--baseline", tmp_path / "b.json", "--max-drop", "test_accuracy=0.01")
    assert r.exit_code == 1, r.stderr
    assert "baseline 0.99" in r.stderr


def test_baseline_accuracies_are_fractions(tmp_path, base):
    edited = json.loads(json.dumps(base))
    edited["checkpoints"][-1]["test_accuracy"] = 96.8  # a percentage, edited by hand
    (tmp_path / "b.json").write_text(json.dumps(edited))
    msg = one_error(invoke("--baseline", tmp_path / "b.json", "--max-drop", "test_accuracy=0"))
    assert msg.endswith("test_accuracy is 96.8, not a fraction in [0, 1]")


def test_a_baseline_that_is_not_a_report_says_why(tmp_path, base):
    text = json.dumps(base, indent=1)
    cases = {
        "cut.json": (text[:-3].encode(), "is not strict JSON: Expecting"),
        "nan.json": (json.dumps({**base, "x": math_nan()}).encode(), "NaN is not JSON (alignctl"),
        "latin1.json": (text.replace('"', '"\xe9', 1).encode("latin-1"), "is not UTF-8 text"),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        msg = one_error(invoke("--baseline", tmp_path / name, "--max-drop", "test_accuracy=0"))
        assert expected in msg, (name, msg)
    assert "(line " in one_error(
        invoke("--baseline", tmp_path / "cut.json", "--max-drop", "test_accuracy=0")
    )
    # PowerShell's `>` writes UTF-16 with a byte-order mark: still a report
    (tmp_path / "u16.json").write_text(text, encoding="utf-16")
    r = invoke("--baseline", tmp_path / "u16.json", "--max-drop", "test_accuracy=0")
    assert r.exit_code == 0, r.stderr


def math_nan() -> float:
    return float("nan")


@pytest.mark.parametrize("written", ["data\\d.npz", "C:\\ci\\d.npz"])
def test_a_windows_path_in_a_config_says_so(tmp_path, no_test_split, written):
    """A config committed from Windows, run on a Linux CI runner: not found, and why."""
    run = tmp_path / "run"
    shutil.copytree(no_test_split, run)
    model = (run / "alignctl.yaml").read_text().splitlines()[0]
    (run / "alignctl.yaml").write_text(f"{model}\ndata:\n  path: {written}\n")  # YAML plain
    msg = one_error(invoke(run=run))
    assert msg.startswith("error: data file ") and written in msg
    assert msg.endswith("(a Windows path? here \\ is part of a file name; write folders with /)")
