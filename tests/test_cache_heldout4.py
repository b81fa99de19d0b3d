"""A fully cached re-run of ``analyze`` builds no model: before, every re-run built the run's
model (and ran it) to probe its inputs, again for the class count C of the verdicts (a fresh
random initialisation and a forward pass, drawing from the global RNG), and a run without a
step-0 checkpoint measured a fresh initialisation's metrics again (the reference). Counted
through a user's factory file, which logs each call."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

import alignctl
from alignctl.runs.checkpoints import write_checkpoint

FACTORY = """
import torch
from pathlib import Path


def make():
    log = Path(__file__).with_name("calls.log")
    log.write_text(log.read_text() + "x" if log.exists() else "x")
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 4))
"""


def _run(root, steps, labels=True):
    root.mkdir()
    g = np.random.default_rng(0)
    x = g.normal(size=(24, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)  # labels 0..2 of C = 4 outputs
    np.savez(root / "data.npz", x_train=x[:16], y_train=y[:16], x_test=x[16:], y_test=y[16:])
    (root / "nets.py").write_text(FACTORY)
    cfg = {"model": {"factory": "nets.py:make"}, "data": {"path": "data.npz"}}
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 4))
    for s in steps:
        torch.manual_seed(s)
        for p in net.parameters():
            torch.nn.init.normal_(p)
        write_checkpoint(root / "checkpoints" / f"step_{s}.safetensors", net.state_dict(),
                         {"step": s})  # fmt: skip
    return root


def _numbers(report):
    return [{k: v for k, v in c.items() if k != "seconds"} for c in report["checkpoints"]]


def _calls(root) -> int:
    log = root / "calls.log"
    return len(log.read_text()) if log.exists() else 0


@pytest.mark.parametrize("steps", [[0, 10, 20], [10, 20]])  # without step 0: a reference
def test_a_fully_cached_rerun_builds_no_model(tmp_path, steps):
    root = _run(tmp_path / "run", steps)
    first = alignctl.analyze(alignctl.open_run(root), cache=tmp_path / "cache")
    assert _calls(root) > 0 and first["cache"]["misses"] == len(steps)
    before = _calls(root)
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    again = alignctl.analyze(alignctl.open_run(root), cache=tmp_path / "cache")
    assert _calls(root) == before, "a fully cached re-run built the model"
    assert torch.equal(torch.get_rng_state(), rng)  # and drew nothing from the global RNG
    assert again["cache"]["hits"] == len(steps)
    assert _numbers(again) == _numbers(first)
    for key in ("verdict", "recommendation", "reference", "notes"):
        assert again[key] == first[key], key
    uncached = alignctl.analyze(alignctl.open_run(root))
    assert again["recommendation"] == uncached["recommendation"]
    assert [c["verdict"] for c in again["checkpoints"]] == [
        c["verdict"] for c in uncached["checkpoints"]
    ]
