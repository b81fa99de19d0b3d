"""A new user's workflows, as README.md tells them: a plain PyTorch loop with the monitor,
their own factory model and .npz data, the CLI on checkpoints saved their way."""

import pytest
import torch

# the model and helpers of the folder tests: the same small MLP and discovery
from test_checkpoints_folders import _found, _state

import alignctl
from alignctl.runs.checkpoints.names import number_in_name


def _separable(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    return x, (x[:, 0] > 0).long()


def test_monitor_does_not_stop_on_the_first_measurement_that_fits():
    # A loop whose network fits its probe between the first and the second measurement: the
    # second is the first fitted one, so the recommendation has no trend since the fit ("stop
    # ... confirm on later checkpoints"). Acting on it ends training exactly where the reason
    # asks for more checkpoints; the stop must wait for a second measurement since the fit.
    x, y = _separable()
    net = torch.nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([1.0, 0.0]))  # always class 0: about half right
    mon = alignctl.Monitor(net, x[:32], y[:32], every=10, out=None, stop_when="stop",
                           test=(x[32:], y[32:]))  # fmt: skip
    assert not mon.step(0)
    assert mon.entries[0]["verdict"] == "learning"
    with torch.no_grad():  # "training": now a perfect classifier
        net.weight.copy_(torch.tensor([[-5.0, 0.0], [5.0, 0.0]]))
        net.bias.zero_()
    stopped = mon.step(10)
    assert mon.entries[1]["verdict"] == "generalising"
    assert mon.recommendation()["action"] == "stop"  # analyze's answer is unchanged
    assert not stopped and not mon.should_stop
    assert mon.step(20)  # flat since the fit: now a trend, and the stop is taken
    assert "stopping at step 20" in mon.stop_reason


# ---- numbers in checkpoint names that are not steps: precisions and model names -------------


@pytest.mark.parametrize(
    "name, step",
    [
        ("ckpt_100_fp16", 100),  # was 16
        ("model_bf16", None),  # was 16
        ("bf16", None),
        ("llama_int8_step_50", 50),
        ("run_8bit_300", 300),
        ("weights_fp32_e7", 7),
        ("ckpt_2000_float16", 2000),
        ("ckpt_2000_bfloat16", 2000),
        ("q4_model_12", 12),
        ("ckpt_fp8_w8a8_40", 40),
    ],
)
def test_a_precision_in_a_name_is_not_its_step(name, step):
    assert number_in_name(name) == step


@pytest.mark.parametrize("pattern", ["ckpt_{s}_fp16.pt", "ckpt_{s}_gpt2.pt", "run_{s}_llama3.pt",
                                     "{s}_resnet50.pt"])  # fmt: skip
def test_a_number_every_name_shares_is_not_the_step(tmp_path, pattern):
    # a user's loop names its checkpoints after the step and the model or precision: the
    # number every name shares was every checkpoint's step, so all three were "step 16" (or
    # 2, 3, 50), ordered by name, with notes that they "record" the same step
    for i, s in enumerate((100, 200, 1000)):
        torch.save({"model": _state(i)}, tmp_path / pattern.format(s=s))
    found, notes = _found(tmp_path)
    assert found == [(pattern.format(s=s), s) for s in (100, 200, 1000)]
    # a precision is never a step (no note); a shared model name is found by the folder (noted)
    shared = any("changes from name to name" in n for n in notes)
    assert notes == [] if "fp16" in pattern else shared, notes


# ---- a checkpoint of the user's model at another size: the error says how to build that size --

FACTORY = """
import torch


def make_net(d=20, width=64, classes=3):
    return torch.nn.Sequential(torch.nn.Linear(d, width), torch.nn.ReLU(),
                               torch.nn.Linear(width, classes))
"""


def test_a_checkpoint_of_another_size_says_where_the_factory_arguments_go(tmp_path):
    import numpy as np
    from typer.testing import CliRunner

    from alignctl.cli.assemble import app

    (tmp_path / "models.py").write_text(FACTORY)
    g = np.random.default_rng(0)
    x = g.normal(size=(40, 20)).astype("float32")
    np.savez(tmp_path / "data.npz", x_train=x, y_train=(x[:, 0] > 0).astype("int64"))
    net = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    torch.save({"epoch": 3, "model": net.state_dict()}, tmp_path / "ep003.pt")
    r = CliRunner().invoke(app, ["analyze", str(tmp_path / "ep003.pt"), "--model",
                                 f"{tmp_path}/models.py:make_net", "--data",
                                 str(tmp_path / "data.npz"), "--no-cache"])  # fmt: skip
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "shape mismatch for 0.weight: checkpoint (32, 20) vs model (64, 20)" in lines[0]
    # what to do next: the factory's arguments, which --model cannot carry
    assert "kwargs" in lines[0] and "alignctl.yaml" in lines[0], lines[0]
