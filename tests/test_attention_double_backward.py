"""Attention whose fused kernel has no double backward (PyTorch's CPU flash attention): the
sketch's JVPs and GrokAlign's penalty differentiate a backward pass through it, and must run
(geometry.devices.twice_differentiable selects the math kernel for them)."""

from pathlib import Path

import pytest
import torch

import alignctl
from alignctl.runs.config import config_from_dict
from alignctl.train.trainer import Trainer

MODEL = '''
import torch
import torch.nn.functional as F
from torch import nn


class Attend(nn.Module):
    """Linear -> 4 tokens of width 8 -> scaled_dot_product_attention (2 heads) -> Linear."""

    def __init__(self, d=10, c=2):
        super().__init__()
        self.inp, self.qkv, self.out = nn.Linear(d, 32), nn.Linear(8, 24), nn.Linear(32, c)

    def forward(self, x):
        t = self.inp(x).reshape(x.shape[0], 4, 8)
        q, k, v = self.qkv(t).reshape(x.shape[0], 4, 3, 2, 4).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (n, heads, tokens, 4)
        return self.out(torch.relu(a.transpose(1, 2).reshape(x.shape[0], 32)))


def net(d=10, c=2):
    return Attend(d, c)
'''


def _module(tmp_path: Path):
    import importlib.util

    (tmp_path / "attend.py").write_text(MODEL)
    spec = importlib.util.spec_from_file_location("attend_test", tmp_path / "attend.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_fused_kernel_really_has_no_double_backward(tmp_path):
    """The premise: without the selector the double backward fails on this machine."""
    net = _module(tmp_path).net()
    x = torch.randn(3, 10, requires_grad=True)
    (g,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    try:
        torch.autograd.grad(g.sum(), list(net.parameters()))
    except RuntimeError as e:
        assert "not implemented" in str(e)
    else:
        pytest.skip("this torch build's attention kernel is twice differentiable")


def test_grokalign_trains_through_attention(tmp_path):
    cfg = {
        "model": {"factory": "attend.py:net", "kwargs": {"d": 10, "c": 2}},
        "data": {"task": "sparse-parity", "n": 64, "n_bits": 10, "k": 3, "seed": 0},
        "train": {"epochs": 1, "batch_size": 32, "loss": "cross_entropy", "seed": 0,
                  "optimizer": {"name": "adamw", "lr": 0.01},
                  "regularisers": [{"name": "grokalign", "lambda": 0.1}]},
    }  # fmt: skip
    _module(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "attend.py").write_text(MODEL)
    trainer = Trainer(run, config_from_dict(cfg, run), "cpu")
    trainer.fit(1, save_every=1)
    assert sorted((run / "checkpoints").glob("*.safetensors"))


def test_the_sketch_measures_through_attention(tmp_path):
    torch.manual_seed(0)
    net = _module(tmp_path).net(10, 300).eval()  # 300 classes: sketched by default
    x, y = torch.randn(4, 10), torch.randint(0, 300, (4,))
    notes, errors = [], {}
    got = alignctl.measure(net, x, y, notes=notes, errors=errors)
    assert any("random probes" in n for n in notes), notes
    ref = alignctl.measure(net, x, y, sketch=0)
    # rank(J) <= 10 (the input width) <= K = 16: the sketch holds J whole, exact to rounding
    for name in ("jacobian_norm", "jacobian_pc1", "centroid_alignment"):
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-6)
