"""One line means one line (issue 16, kind 5): usage errors, warnings and escapes.

Every usage error (a value out of range, a misspelt option, a non-integer, a missing argument
or value, an unknown command) is one ``error:`` line on stderr and exit 2, not Typer's boxed
panel; ``--help`` is untouched; warnings show only with ``--verbose``; control characters in
any user value are escaped in every line alignctl prints about a problem."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.cli.common import note_line, printable

SRC = str(Path(__file__).resolve().parents[1] / "src")

USAGE = {
    "--samples 0": ["analyze", "RUN", "--samples", "0"],
    "--batch-size 0": ["analyze", "RUN", "--batch-size", "0"],
    "--pgd-steps 0": ["analyze", "RUN", "--pgd-steps", "0"],
    "--sampels (misspelt)": ["analyze", "RUN", "--sampels", "3"],
    "non-integer --samples": ["analyze", "RUN", "--samples", "x"],
    "non-number --eps": ["analyze", "RUN", "--eps", "abc"],
    "option without its value": ["analyze", "RUN", "--split"],
    "missing argument": ["analyze"],
    "unknown command": ["analyse"],
    "train --epochs -1": ["train", "--epochs", "-1"],
    "train --save-every 0": ["train", "--save-every", "0"],
    "race --seeds 0": ["race", "--out", "o", "--seeds", "0"],
    "race without --out": ["race"],
    "extra argument": ["metrics", "extra"],
    "escape in an option name": ["analyze", "RUN", "--\x1b[2Jx"],
}


@pytest.mark.parametrize("case", sorted(USAGE))
def test_usage_errors_are_one_line(case, tmp_path):
    argv = [str(tmp_path) if a == "RUN" else a for a in USAGE[case]]
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert lines[0].isprintable() and "╭" not in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_the_console_script_gives_one_line_too(tmp_path):
    """The installed entry point (``alignctl.cli:main``), not only the test runner."""
    code = "import sys; from alignctl.cli import main; sys.argv[0] = 'alignctl'; main()"
    env = {**os.environ, "PYTHONPATH": SRC}
    for argv in (["analyze", str(tmp_path), "--sampels", "3"], ["bogus"]):
        cmd = [sys.executable, "-c", code, *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("error: ")


def test_help_is_intact():
    for argv in (["--help"], ["analyze", "--help"], ["train", "--help"]):
        r = CliRunner().invoke(app, argv)
        assert r.exit_code == 0 and "Usage" in r.stdout and r.stderr == "", argv
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.startswith("alignctl ")


def test_no_command_prints_help_and_one_error_line():
    r = CliRunner().invoke(app, [])
    assert r.exit_code == 2 and "analyze" in r.stdout
    assert r.stderr.strip().splitlines() == ["error: missing command; see the commands above"]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("run\x1b[2J", "run\\x1b[2J"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("bell\x07", "bell\\x07"),
        ("rtl\u202eevil", "rtl\\u202eevil"),
        ("two\nlines\r\n", "two lines"),
        ("tab\tand  spaces", "tab and spaces"),
        ("del\x7f", "del\\x7f"),
        ("c1\x9b31m", "c1\\x9b31m"),
        ("plain ünïcode ✓", "plain ünïcode ✓"),
    ],
)
def test_printable_escapes_control_characters(raw, shown):
    assert printable(raw) == shown
    assert printable(raw).isprintable()


def test_note_and_gate_lines_are_escaped(capsys):
    note_line("skipped step_\x1b[2J.pt")
    note_line("x\x1b[31m >= 1: value 0", prefix="gate failed")
    err = capsys.readouterr().err
    assert "\x1b" not in err
    assert err.splitlines() == [
        "note: skipped step_\\x1b[2J.pt",
        "gate failed: x\\x1b[31m >= 1: value 0",
    ]


def test_warnings_show_only_with_verbose(tmp_path, monkeypatch):
    """A library warning before an error: silent by default; with --verbose (anywhere on the
    line) or ALIGNCTL_VERBOSE=1 one escaped ``warning:`` line."""
    import alignctl.runs.validate as validate

    real = validate.check_pgd

    def noisy(*args):
        warnings.warn("torch says\x1b[2J something\nlong", UserWarning, stacklevel=1)
        real(*args)

    monkeypatch.setattr(validate, "check_pgd", noisy)
    missing = str(tmp_path / "nope")
    quiet = CliRunner().invoke(app, ["analyze", missing])
    assert quiet.exit_code == 2 and quiet.stderr.strip().splitlines() == [
        f"error: {missing} does not exist"
    ]
    for argv, env in ((["--verbose", "analyze", missing], {}),
                      (["analyze", missing, "--verbose"], {}),
                      (["analyze", missing], {"ALIGNCTL_VERBOSE": "1"})):  # fmt: skip
        r = CliRunner().invoke(app, argv, env=env)
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 2, r.stderr
        assert lines[0] == "warning: UserWarning: torch says\\x1b[2J something long"
        assert lines[1].startswith("error: ")


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", "{run}", "--json", ""],
        ["analyze", "{run}", "--json="],
        ["analyze", "{run}", "--cache", "  "],
        ["analyze", ""],
        ["compare", "{run}", ""],
        ["train", "--task", "sparse-parity", "--out", ""],
        ["race", "--task", "xor", "--regs", "", "--out", "{tmp}/r"],
    ],
)
def test_an_empty_argument_is_one_line_and_exit_2(tmp_path, argv):
    """An unset shell variable gives an empty argument: `--json "$OUT"` dropped the JSON and
    exited 0 (a CI step after it found no report); `analyze ""` analysed the working
    directory. Nothing is written."""
    run = Path(__file__).resolve().parents[1] / "examples/checkpoints/sparse-parity-grokalign"
    args = [a.format(run=run, tmp=tmp_path) for a in argv]
    r = CliRunner().invoke(app, args)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and "empty" in lines[0]
    assert not any(tmp_path.iterdir())
