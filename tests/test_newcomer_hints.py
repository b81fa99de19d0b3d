"""Slips a newcomer makes on a first plain-PyTorch run, each one ``error:`` line (exit 2) whose
hint names the fix: a factory file given to ``--model`` without its callable, and checkpoints
saved into a sub-folder other than ``checkpoints/``."""

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignctl.cli.assemble import app

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import make_run  # noqa: E402
from test_outputs import one_error  # noqa: E402


@pytest.mark.parametrize("spec", ["nets.py", "models/nets.py", "/abs/path/nets.py"])
def test_a_factory_file_without_its_callable_says_to_name_it(tmp_path, spec):
    run = make_run(tmp_path / "run")
    line = one_error(CliRunner().invoke(app, ["analyze", str(run), "--model", spec]))
    assert f"--model {spec}: name the function" in line and f"{spec}:make_net" in line
    assert "pass --config" not in line  # the old hint: an arch section named 'nets.py'


@pytest.mark.parametrize("spec", ["resnet", "MLP", "cnn2"])
def test_an_unknown_architecture_lists_the_valid_ones_and_the_factory_form(tmp_path, spec):
    run = make_run(tmp_path / "run")
    line = one_error(CliRunner().invoke(app, ["analyze", str(run), "--model", spec]))
    assert "unknown architecture; valid: cnn, mlp" in line and "FILE.py:CALLABLE" in line


@pytest.mark.parametrize("sub", ["ckpts", "weights", "saved_models"])
@pytest.mark.parametrize("name", ["epoch_3.pt", "step_5.safetensors", "last.ckpt"])
def test_checkpoints_in_another_sub_folder_are_pointed_at(tmp_path, sub, name):
    run = make_run(tmp_path / "run")
    (run / "checkpoints").rename(run / sub)
    for p in (run / sub).iterdir():  # the loop's own names
        p.rename(p.with_name(name))
        break
    line = one_error(CliRunner().invoke(app, ["analyze", str(run)]))
    assert line.startswith(f"error: no checkpoint files in {run} ")
    assert line.endswith(f"the sub-folder {sub}/ holds some: pass {run / sub} as the path")


def test_no_hint_without_checkpoint_files_below(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "checkpoints").rename(run / "logs")
    for p in (run / "logs").iterdir():
        p.rename(p.with_suffix(".txt"))
    line = one_error(CliRunner().invoke(app, ["analyze", str(run)]))
    assert "sub-folder" not in line
