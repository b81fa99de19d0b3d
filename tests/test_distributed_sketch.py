"""One checkpoint whose whole-Jacobian metrics are sketched (many classes), analysed by 2 real
gloo ranks: the report is the one process writes, bit for bit (qa6). Its samples were dealt
over the ranks like an exact measurement's, and each rank's probes, drawn chunk after chunk
from the same seed, were not one process's: values 0.05-0.5% apart (within their errors)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from test_distributed import alignctl, silent, without_timing

dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="no torch.distributed")

FACTORY = """
from torch import nn


def make():
    return nn.Sequential(nn.Tanh(), nn.Linear(120, 120), nn.Tanh(), nn.Linear(120, 300))
"""


def _run(root: Path) -> Path:
    """300 classes, input width 120 (more directions than 5 Krylov blocks of 16 hold: the
    probes are what is tested), one checkpoint, 16 samples."""
    root.mkdir(parents=True)
    (root / "net.py").write_text(FACTORY)
    g = np.random.default_rng(0)
    x = g.normal(size=(16, 120)).astype(np.float32)
    np.savez(root / "data.npz", x_train=x, y_train=g.integers(0, 300, 16))
    cfg = {"model": {"factory": "net.py:make"}, "data": {"path": "data.npz"}}
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    (root / "checkpoints").mkdir()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Linear(120, 120), torch.nn.Tanh(),
                              torch.nn.Linear(120, 300))  # fmt: skip
    save_file(net.state_dict(), str(root / "checkpoints" / "step_100.safetensors"))
    return root


def test_a_sketched_checkpoint_is_not_dealt_by_samples(tmp_path):
    run = _run(tmp_path / "run")
    args = ["analyze", run, "--json", "-", "--threads", "1", "--keep-samples", "--no-cache"]
    one, two = alignctl(args, 1, tmp_path), alignctl(args, 2, tmp_path)
    assert one.returncode == two.returncode == 0 and silent(two), two.stderr
    a, b = without_timing(json.loads(one.stdout)), without_timing(json.loads(two.stdout))
    assert "metrics_error" in a["checkpoints"][0]  # sketched
    assert a == b  # every value, error and note
    exact = [*args, "--sketch", "0", "--metrics", "centroid_alignment,jacobian_norm"]
    one, two = alignctl(exact, 1, tmp_path), alignctl(exact, 2, tmp_path)
    assert one.returncode == two.returncode == 0 and silent(two), two.stderr
    assert "metrics_error" not in json.loads(two.stdout)["checkpoints"][0]
