"""Held-out inputs for issue 17 (qa_scale): distributed training and analysis on runs the
scale tests were not built on. Each test failed before the fix its docstring names."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
import yaml
from test_distributed import alignctl, silent
from torch import nn

import alignctl as lib

distributed = pytest.mark.skipif(not torch.distributed.is_available(), reason="no gloo")

BATCHNORM_NET = """
from torch import nn


def make():
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
"""


@distributed
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


@pytest.mark.parametrize("metrics", ["fast", "standard", "jacobian_norm"])
@pytest.mark.parametrize("act", [nn.Tanh, nn.ReLU, nn.Sigmoid])
def test_measure_keeps_no_weight_alive(metrics, act):
    """The chunk-size probe counted autograd's saved tensors with a pack hook that returned
    each tensor itself; an op saving its own output (tanh, ReLU, sigmoid) then held that
    output's Python tensor in its own graph, a cycle gc cannot see, and the graph held the
    weights. Before: every measure() (every analyze, every monitor probe) kept its model's
    weights alive for the life of the process (analyze of a 383 MiB model with the cache on
    peaked at 2.0x the checkpoint: the cache's fresh model for C beside the leaked one);
    after: nothing of the model outlives the call."""
    net = nn.Sequential(nn.Linear(16, 32), act(), nn.Linear(32, 10))
    weight = weakref.ref(net[0].weight)
    x, y = torch.randn(4, 16), torch.randint(0, 10, (4,))
    lib.measure(net, x, y, metrics=metrics)
    del net
    gc.collect()
    assert weight() is None


def test_saved_bytes_are_unchanged_by_the_detached_pack():
    """The probe still counts each saved storage once: Linear-Tanh-Linear on 3 samples saves
    the input, the first layer's weight, tanh's output and the second layer's weight."""
    from alignctl.geometry.memory import saved_bytes

    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2))
    got = saved_bytes(net, torch.randn(3, 5))
    assert got == 4 * (3 * 5 + 7 * 5 + 3 * 7 + 2 * 7)


def test_a_one_row_tensor_streams_in_slices(tmp_path, monkeypatch):
    """A (1, 2*10^6) parameter is one row: the streamed load read it whole into its buffer
    (a (1, 10^8) float32 parameter: analyze peaked at 2.0x its 381 MiB checkpoint). After:
    slices of at most SLICE_BYTES elements of any contiguous tensor, the values unchanged,
    from float32, bfloat16 and float64 files."""
    import tracemalloc

    from safetensors.torch import save_file

    from alignctl.runs.checkpoints import CheckpointRef
    from alignctl.runs.checkpoints import stream as stream_mod
    from alignctl.runs.checkpoints.stream import stream_checkpoint

    monkeypatch.setattr(stream_mod, "SLICE_BYTES", 2**16)
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        model = nn.Module()
        model.p = nn.Parameter(torch.zeros(1, 2 * 10**6))
        model.s = nn.Parameter(torch.zeros(()))
        want = {"p": torch.randn(1, 2 * 10**6).to(dtype), "s": torch.tensor(3.5, dtype=dtype)}
        path = tmp_path / f"step_{dtype}.safetensors".replace("torch.", "")
        save_file(want, str(path))
        tracemalloc.start()
        try:
            assert stream_checkpoint(model, CheckpointRef(path, path.name, 0)) is not None
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 2**20, (dtype, peak)  # the file's tensor is 4-16 MiB
        for k, v in want.items():
            assert torch.equal(getattr(model, k).detach(), v.float()), (dtype, k)
