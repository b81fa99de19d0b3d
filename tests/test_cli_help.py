"""Help and self-description are whole: every option's help and every command's summary in
full (wrapped, never cut), placeholders that name what to type rather than a Python type;
`alignctl metrics` prints each metric's whole definition; `--version` says what ran; hints
name the install command that fits how alignctl was installed."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from alignctl.cli.assemble import app

runner = CliRunner()
COMMANDS = sorted(typer.main.get_command(app).commands)


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("width", ["60", "80", "120"])
@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_is_whole_at_any_width(command, width):
    args = ([command] if command else []) + ["--help"]
    r = runner.invoke(app, args, env={"COLUMNS": width})
    assert r.exit_code == 0
    out = r.stdout
    assert not re.search(r"<(bool|str|int|float|list\[|text)", out), out
    assert "…" not in out and not re.search(r"\w\.\.\.$", out, flags=re.M)
    group = typer.main.get_command(app)
    cmd = group.commands[command] if command else group
    for p in cmd.params:
        if p.help:
            assert words(p.help) in words(out), p.name
    if command is None:
        for name, sub in group.commands.items():
            first = words(inspect.cleandoc(sub.help or "").split("\n\n")[0])
            assert f"{name} {first}" in words(out)


def test_require_verdict_choices_are_shown_whole():
    out = runner.invoke(app, ["analyze", "--help"], env={"COLUMNS": "80"}).stdout
    assert "learning|memorising|generalising|robust" in words(out).replace(" ", "")
    assert "--fail-under METRIC=VALUE" in out and "--robustness / --no-robustness" in out


def test_metrics_prints_whole_definitions():
    from alignctl.geometry.metrics import METRICS

    for width in ("60", "100"):
        out = runner.invoke(app, ["metrics"], env={"COLUMNS": width}).stdout
        for name in METRICS.names():
            doc = words(inspect.cleandoc(METRICS.get(name).fn.__doc__))
            assert doc in words(out), name
        assert max(len(x) for x in out.splitlines()) <= max(int(width), 40) or width == "60"


def test_version_names_alignctl_torch_python_and_the_auto_device():
    import platform

    import torch

    from alignctl import __version__

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0
    line = r.stdout.strip()
    assert line.startswith(f"alignctl {__version__} (torch {torch.__version__}, ")
    assert f"python {platform.python_version()}" in line
    want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cpu" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        want = "mps"
    assert re.search(rf"device auto: {want}\b", line)


def test_version_is_one_quick_line_in_a_fresh_process():
    code = "from alignctl.cli import main; import sys; sys.argv = ['alignctl', '--version']; main()"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1 and r.stderr == ""


# ---- install hints ------------------------------------------------------------------------
def _dist(tmp_path: Path, direct_url: dict | None) -> metadata.Distribution:
    info = tmp_path / "alignctl-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: alignctl\nVersion: 0.1.0\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))
    return metadata.PathDistribution(info)


SITE = "/usr/lib/python3/site-packages/alignctl/errors.py"  # an installed package's file


@pytest.mark.parametrize(
    "direct_url, want",
    [
        (None, "pip install 'alignctl[plot]'"),  # from an index
        ({"url": "file:///src/alignctl", "dir_info": {"editable": True}},
         "pip install -e '/src/alignctl[plot]'"),
        ({"url": "file:///src/alignctl", "dir_info": {}}, "pip install '/src/alignctl[plot]'"),
        ({"url": "https://github.com/o/alignctl", "vcs_info": {"vcs": "git", "commit_id": "ab"}},
         "pip install 'alignctl[plot] @ git+https://github.com/o/alignctl'"),
    ],
)  # fmt: skip
def test_install_hint_fits_how_alignctl_was_installed(tmp_path, direct_url, want):
    from alignctl.errors import install_command

    assert install_command("plot", module_file=SITE, dist=_dist(tmp_path, direct_url)) == want


def test_install_hint_from_a_checkout(tmp_path, monkeypatch):
    from alignctl.errors import install_command

    checkout = Path(__file__).resolve().parents[1]
    errors_py = checkout / "src" / "alignctl" / "errors.py"
    monkeypatch.chdir(checkout)
    assert install_command("plot", module_file=errors_py) == "pip install -e '.[plot]'"
    monkeypatch.chdir(tmp_path)
    assert install_command("stats", module_file=errors_py) == f"pip install -e '{checkout}[stats]'"


def test_missing_matplotlib_hint_in_plot(monkeypatch, tmp_path):
    from alignctl.errors import InputError
    from alignctl.report import render

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    with pytest.raises(InputError, match=r"--plot needs matplotlib: pip install -e '.*\[plot\]'"):
        render.plot({"checkpoints": []}, tmp_path / "x.png")
