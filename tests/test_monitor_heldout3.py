"""The monitor in training loops the other monitor tests do not use (qa_live): a loop that
seeds its generators and only then builds the monitor, in a fresh interpreter (first imports
included), with checkpoints and a model config; training must be bit for bit the one without
the monitor."""

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import alignctl

SRC = str(Path(alignctl.__file__).resolve().parents[1])

LOOP = r"""
import hashlib, random, sys
import numpy as np, torch
import alignctl

torch.manual_seed(0); random.seed(0); np.random.seed(0)
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 16), torch.nn.ReLU(),
                          torch.nn.Linear(16, 3))
drop = torch.nn.Dropout(0.3)
g = torch.Generator().manual_seed(1)
x = torch.randn(64, 6, generator=g); y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
mon = None
if sys.argv[1] == "on":  # built after seeding: nothing it does may draw from the generators
    mon = alignctl.Monitor(net, x[:32], y[:32], every=2, out=sys.argv[2], tensorboard=False,
                           save_checkpoints=True, stop_when="stop",
                           model_config={"arch": "mlp", "in_features": 6, "hidden": [16],
                                         "out_features": 3})
opt = torch.optim.Adam(net.parameters(), lr=0.01)
order = list(range(64))
for step in range(7):
    random.shuffle(order)  # data order from Python's random
    idx = torch.tensor(order[:16])[torch.from_numpy(np.random.permutation(16))]
    loss = torch.nn.functional.cross_entropy(net(drop(x[idx])), y[idx])
    opt.zero_grad(); loss.backward(); opt.step()
    if mon is not None:
        mon.step(step)
if mon is not None:
    mon.close()
h = hashlib.sha256()
for t in list(net.state_dict().values()) + [torch.rand(4)]:
    h.update(t.numpy().tobytes())
for st in opt.state_dict()["state"].values():
    for t in st.values():
        h.update(t.numpy().tobytes())
h.update(repr((random.random(), float(np.random.rand()))).encode())
print(h.hexdigest())
"""


def _run(tmp_path, mode):
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run(
        [sys.executable, "-c", LOOP, mode, str(tmp_path / "m")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_monitor_built_after_seeding_leaves_training_bit_for_bit_unchanged(tmp_path):
    """qa_live: in a fresh interpreter the monitor's first import (the report package's
    compatibility ``__getattr__`` imported the renderers, and rich draws from Python's
    ``random`` at import) and its model_config check (a model built, drawing its initial
    weights from torch's generator) changed the random numbers the loop drew next: other data
    order, other dropout masks, other weights than the run without the monitor."""
    assert _run(tmp_path, "on") == _run(tmp_path, "off")
    assert (tmp_path / "m" / "checkpoints").is_dir()


def _states():
    return torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()


def test_no_call_into_the_monitor_draws_from_the_global_generators(tmp_path):
    """qa_live: Monitor(save_checkpoints=True, model_config=...) built a model to check the
    section against the monitored one, drawing its initial weights from torch's generator."""
    from alignctl.runs.models import build_model

    spec = {"arch": "mlp", "in_features": 6, "hidden": [8], "out_features": 2}
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    net = build_model(spec, tmp_path)
    x = torch.ones(8, 6).cumsum(0)
    y = torch.arange(8) % 2
    before = _states()
    mon = alignctl.Monitor(net, x, y, every=1, out=tmp_path / "m", save_checkpoints=True,
                           model_config=spec, metrics="standard")  # fmt: skip
    mon.step(0)
    mon.step(1)
    mon.close()
    after = _states()
    assert torch.equal(before[0], after[0])
    assert before[1] == after[1]
    assert (before[2] == after[2]).all()


def test_the_missing_config_warning_points_at_the_users_monitor_call(tmp_path):
    """With __init__ wrapped to keep the RNGs, the warning named probe.py (the wrapper), not
    the line that built the Monitor."""
    import warnings

    import alignctl

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mon = alignctl.Monitor(torch.nn.Linear(3, 2), torch.randn(4, 3), out=tmp_path / "r",
                               save_checkpoints=True)  # fmt: skip
        mon.close()
    assert [w.filename for w in caught] == [__file__]


def test_the_monitors_run_config_records_no_training_it_did_not_see(tmp_path):
    """The Monitor's alignctl.yaml held `alignctl train`'s defaults (train: weight_decay 0.0,
    loss cross_entropy, epochs 1000), which analyze reads as the record of how the user's loop
    trained (a recommendation to add weight decay to a loop that used it)."""
    import yaml

    import alignctl
    from alignctl.runs.config import load_config
    from alignctl.runs.models import build_model

    spec = {"arch": "mlp", "in_features": 4, "hidden": [8], "out_features": 3}
    net = build_model(spec, tmp_path)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    with alignctl.Monitor(net, x, y, every=1, out=tmp_path / "r", save_checkpoints=True,
                          model_config=spec) as mon:  # fmt: skip
        mon.step(0)
    saved = yaml.safe_load((tmp_path / "r" / "alignctl.yaml").read_text())
    assert "train" not in saved and "grokked" not in saved and saved["model"]["arch"] == "mlp"
    assert load_config(tmp_path / "r" / "alignctl.yaml").train_recorded is False
