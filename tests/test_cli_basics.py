"""The CLI starts without importing torch, and its usage errors exit 2."""

import subprocess
import sys

from typer.testing import CliRunner

from alignctl import __version__
from alignctl.cli.assemble import app

runner = CliRunner()


def test_help_does_not_import_torch():
    """(``--version`` does: it names torch's version and the device.)"""
    code = (
        "import sys\n"
        "from alignctl.cli import app\n"
        "for argv in (['--help'], ['analyze', '--help'], ['train', '--help']):\n"
        "    try:\n"
        "        app(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (argv, e.code)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_version_flag():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.startswith(f"alignctl {__version__} (torch ")


def test_unknown_option_is_a_usage_error():
    assert runner.invoke(app, ["analyze", "--nope"]).exit_code == 2


def test_metrics_command_lists_every_registered_metric():
    from alignctl import METRICS

    r = runner.invoke(app, ["metrics"])
    assert r.exit_code == 0
    for name in METRICS.names():
        assert name in r.stdout


def test_every_metric_named_in_the_docs_exists():
    import re
    from pathlib import Path

    from alignctl import METRICS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Metrics", 1)[1].split("###", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_0-9]+)` \|", section, flags=re.M))
    assert documented == set(METRICS.names())
