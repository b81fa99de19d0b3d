"""Every option of every command refuses an empty and a blank value (an unset shell variable:
``--cache "$DIR"``; typer turned ``""`` into ``Path(".")``, the working directory), in every
spelling (``--opt ""``, ``--opt=``, ``-o ""``), and every positional argument does too. The
cases are generated from the commands' parameter lists, so a new option is covered."""

from __future__ import annotations

import click
import pytest
import typer
from typer.testing import CliRunner

from alignctl.cli.assemble import app

COMMAND = typer.main.get_command(app)


def _cases() -> list[tuple[str, list[str]]]:
    cases = []
    for name, cmd in sorted(COMMAND.commands.items()):
        for p in cmd.params:
            if isinstance(p, click.Argument):
                for blank in ("", " \t"):
                    cases.append((f"{name} {p.name}={blank!r}", [name, blank]))
                continue
            if getattr(p, "is_flag", False) or getattr(p, "count", False):
                continue  # takes no value
            for opt in p.opts:
                for blank in ("", "  "):
                    cases.append((f"{name} {opt} {blank!r}", [name, opt, blank]))
                    if opt.startswith("--"):
                        cases.append((f"{name} {opt}={blank!r}", [name, f"{opt}={blank}"]))
    return cases


CASES = _cases()


def test_the_cases_cover_every_command():
    names = {argv[0] for _, argv in CASES}
    with_options = {n for n, c in COMMAND.commands.items() if any(
        isinstance(p, click.Option) and not p.is_flag for p in c.params)}  # fmt: skip
    assert with_options <= names and {"analyze", "train", "race", "compare", "geometry"} <= names


@pytest.mark.parametrize("argv", [argv for _, argv in CASES], ids=[i for i, _ in CASES])
def test_an_empty_or_blank_value_is_refused(tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, argv)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, (r.exit_code, r.stderr, r.stdout)
    assert lines[0].startswith("error: ") and "empty" in lines[0], lines
    assert not any(tmp_path.iterdir())  # nothing written in the working directory
