"""A data section's ``num_classes`` is the C of chance (1/C) in every verdict: one the labels
or the model contradict is one ``error:`` line, exit 2, in ``analyze`` and ``train`` (it was
used silently: 5 declared over a 3-output model judged the skill against chance 0.2)."""

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.runs.tasks import make_dataset

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import make_run  # noqa: E402  (a 3-output MLP, labels 0..2)
from test_outputs import one_error  # noqa: E402

MODEL = {"arch": "mlp", "in_features": 4, "hidden": [8], "out_features": 3}


def _cli(root: Path, num_classes, command: str):
    make_run(
        root, config={"model": MODEL, "data": {"path": "data.npz", "num_classes": num_classes}}
    )
    argv = ["analyze", str(root), "-q", "--no-cache"]
    if command == "train":
        argv = ["train", "--config", str(root / "alignctl.yaml"), "--out", str(root / "t"),
                "--epochs", "1", "-q"]  # fmt: skip
    return CliRunner().invoke(app, argv)


@pytest.mark.parametrize("command", ["analyze", "train"])
@pytest.mark.parametrize(
    ("declared", "fragment"),
    [
        (4, "num_classes is 4 but the model has 3 outputs"),  # more classes than outputs
        (7, "num_classes is 7 but the model has 3 outputs"),
        (2, "label 2 is out of range for num_classes 2"),  # labels beyond the declared C
        (1, "label 2 is out of range for num_classes 1"),
    ],
)
def test_a_num_classes_the_labels_or_the_model_contradict_is_refused(
    tmp_path, command, declared, fragment
):
    assert fragment in one_error(_cli(tmp_path / "run", declared, command))
    assert not (tmp_path / "run" / "t").exists()  # train refused before creating its folder


@pytest.mark.parametrize("command", ["analyze", "train"])
def test_the_right_num_classes_runs(tmp_path, command):
    assert _cli(tmp_path / "run", 3, command).exit_code == 0


@pytest.mark.parametrize(
    ("labels", "declared", "ok"),
    [
        ([0, 1, 2], 3, True),
        ([0, 1, 1], 5, True),  # classes that happen not to occur
        ([-1, 1, 1], 2, True),  # a scalar output's -1/+1 labels
        ([-1, 1, 1], 1, True),
        ([0, 1, 1], 1, True),
        ([-1, 1, 2], 3, False),  # -1 is a binary label only
        ([0, 3, 1], 3, False),
        ([0, 2, 1], 2, False),
        ([-2, 1, 1], 2, False),
    ],
)
def test_data_labels_against_their_own_num_classes(labels, declared, ok):
    x, y = np.zeros((3, 2), np.float32), np.array(labels)
    if ok:
        assert make_dataset(x, y, x, y, source="d", num_classes=declared).num_classes == declared
        return
    with pytest.raises(InputError, match="d: y_train: label -?[0-9] is out of range for num_cla"):
        make_dataset(x, y, source="d", num_classes=declared)
