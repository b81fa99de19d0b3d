"""The suite's outcome does not depend on where it runs: the width of the terminal it was started
from, variables CI sets (COLUMNS, GITHUB_STEP_SUMMARY, FORCE_COLOR, CI), a launcher that
ignores SIGINT (``cmd &`` in a script), Hypothesis's clock. Each of these made a test pass on
one machine and fail on another; tests/conftest.py keeps them out, and the CLI's piped tables
no longer follow the terminal."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings
from test_cache import make_run
from typer.testing import CliRunner

from alignctl.cli.assemble import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples/checkpoints"
HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("columns", [None, "40", "120"])
@pytest.mark.parametrize("command", ["analyze", "compare"])
def test_a_piped_table_ignores_the_terminal_it_was_started_from(tmp_path, monkeypatch, command,
                                                                 columns):  # fmt: skip
    """rich measured whichever of stdin and stderr was a terminal: under pytest in a terminal
    (or `analyze R > file`) the table was as wide as the window, in CI 80 wide, so a test of
    the output passed on one and failed on the other. Piped: COLUMNS, else 80."""
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=1: os.terminal_size((211, 50)))
    if columns:
        monkeypatch.setenv("COLUMNS", columns)
    if command == "analyze":
        args = ["analyze", str(make_run(tmp_path / "r", n_checkpoints=2)), "--metrics", "fast"]
    else:
        args = ["compare", *(str(EXAMPLES / n) for n in ("sparse-parity-baseline",
                                                           "sparse-parity-grokalign"))]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.stderr
    widest, want = max(map(len, r.stdout.splitlines())), int(columns or 80)
    assert widest <= want and (command != "analyze" or widest == want), r.stdout  # the panel


def test_the_environment_of_the_run_is_kept_out():
    from conftest import FOREIGN_ENV

    assert not [k for k in os.environ if k in FOREIGN_ENV or k.startswith("ALIGNCTL_")
                and k != "ALIGNCTL_CACHE"]  # fmt: skip
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    assert settings.default.deadline is None  # no wall-clock limit on a loaded machine


def test_a_child_gets_ctrl_c():
    """What every Ctrl-C test relies on: a process it starts can be interrupted."""
    child = subprocess.Popen([sys.executable, "-c", "import time; print(1, flush=True); "
                              "time.sleep(60)"], stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert child.stdout.readline().strip() == b"1"
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=30) != 0
    finally:
        child.kill() if child.poll() is None else None


def test_the_suite_is_the_same_under_a_hostile_launcher(tmp_path):
    """The tests above, and one that reads a panel's wrapped words, in a pytest started as CI
    or a script might start it: SIGINT ignored, a 40-column COLUMNS, colour forced, a step
    summary and alignctl's own variables set, a temporary folder deeper than a socket's path
    can be. (Each failed a test before tests/conftest.py.)"""
    summary = tmp_path / "summary.md"
    env = {**os.environ, "COLUMNS": "40", "FORCE_COLOR": "1", "ALIGNCTL_VERBOSE": "1",
           "GITHUB_STEP_SUMMARY": str(summary), "CI": "true",
           "PYTHONPATH": os.pathsep.join(sys.path)}  # fmt: skip
    tests = [f"{HERE / 'test_hermetic.py'}::test_the_environment_of_the_run_is_kept_out",
             f"{HERE / 'test_hermetic.py'}::test_a_child_gets_ctrl_c",
             f"{HERE / 'test_cli_analyze.py'}::"
             "test_require_verdict_with_every_output_and_the_step_summary",
             f"{HERE / 'test_outputs.py'}::test_block_devices_and_sockets_are_refused",
             f"--basetemp={tmp_path / ('long' * 30)}"]  # fmt: skip
    code = ("import signal, sys, pytest; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', *sys.argv[1:]]))")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code, *tests], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert not summary.exists()
