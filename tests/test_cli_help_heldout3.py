"""Every command's --help as a new user reads it: each option's placeholder says what it takes
(before, --threads THREADS, --weights WEIGHTS, --cache CACHE beside "in DIR", --dist DIST for
a METRIC), and the Examples section at the end names only real options, parsing as written."""

from __future__ import annotations

import shlex

import click
import pytest
import typer
from typer.testing import CliRunner

from alignctl.cli.argv import METAVARS
from alignctl.cli.assemble import app
from alignctl.cli.examples import EXAMPLES

GROUP = typer.main.get_command(app)
NAMES = sorted(GROUP.commands)


@pytest.mark.parametrize("name", NAMES)
def test_every_option_has_a_placeholder_that_says_what_it_takes(name):
    cmd = GROUP.commands[name]
    for p in cmd.params:
        if isinstance(p, click.Option) and not p.is_flag and p.name != "help":
            generic = p.metavar == p.name.upper() and p.name not in METAVARS
            assert not generic, f"{name} --{p.name}: placeholder {p.metavar}"


@pytest.mark.parametrize("name", NAMES)
def test_help_ends_with_examples_that_parse(name):
    out = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "100"}).output
    assert "Examples:" in out and out.rstrip().endswith(EXAMPLES[name][-1])
    cmd = GROUP.commands[name]
    for line in EXAMPLES[name]:
        words = shlex.split(line)
        assert words[:2] == ["alignctl", name]
        cmd.make_context(name, words[2:], resilient_parsing=False)  # raises on a bad option
