"""Held-out inputs for issue 17 (qa_scale): distributed training and analysis on runs the
scale tests were not built on. Each test failed before the fix its docstring names."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from test_distributed import alignctl, silent

dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="no torch.distributed")

BATCHNORM_NET = """
from torch import nn


def make():
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
"""


def test_a_one_row_share_of_a_batchnorm_model_is_one_line_before_anything_is_written(tmp_path):
    """14 samples in batches of 3 (the last of 2): one process trains a BatchNorm model, but
    2 ranks take shares of 1 and 2 rows, and BatchNorm refuses one row in training mode.
    Before: step 0's checkpoint written, then 'internal error: ValueError ... this is a bug'
    at the first step. After: the check of the smallest batch counts each rank's share: one
    line naming it, exit 2 on every rank, nothing written."""
    g = np.random.default_rng(0)
    x, y = g.normal(size=(14, 6)).astype(np.float32), g.integers(0, 3, 14)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    (tmp_path / "net.py").write_text(BATCHNORM_NET)
    cfg = {"model": {"factory": "net.py:make"}, "data": {"path": "d.npz"},
           "train": {"epochs": 1, "batch_size": 3}}  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    args = ["train", "--config", "c.yaml", "-q", "--threads", "1", "--out"]
    one = alignctl([*args, "one"], 1, tmp_path)
    assert one.returncode == 0, one.stderr
    two = alignctl([*args, "two"], 2, tmp_path)
    assert two.returncode == 2 and silent(two), two.stderr
    lines = two.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), two.stderr
    assert "batch of 1 row" in lines[0] and "2 processes" in lines[0], lines[0]
    assert "internal error" not in lines[0]
    assert not (tmp_path / "two").exists()
