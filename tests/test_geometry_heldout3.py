"""Held-out near rank-deficient spectra (issue 17 item 5): a rank-r last layer plus a tail of
singular values near the float32 rounding bound, what training and GrokAlign converge to.

The float32 QR + SVD path set every singular value under its rounding bound to 0. PC1 does not
notice, but the effective rank does: -p log p has an unbounded slope at 0, so 199 values of
1e-6 sigma_1 hold 2e-3 of the entropy. Before: erank off by 1e-3 (C = 200) and 2e-4 (C = 250,
rank 1) against float64; the spectrum metrics are checked to 1e-4."""

import copy

import pytest
import torch
from test_geometry import brute_force
from torch import nn

import alignctl

SPEC = ["jacobian_pc1", "jacobian_erank", "jacobian_alignment_full", "jacobian_norm"]


def tailed(c: int, d: int, rank: int, eps: float, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, c))
    with torch.no_grad():
        w = torch.randn(c, rank) @ torch.randn(rank, d)
        tail = torch.randn(c, d) * eps * (min(c, d) / (c * d)) ** 0.5
        net[2].weight.copy_(w / w.norm() + tail)
    return net


@pytest.mark.parametrize(
    "c, d, rank, eps", [(200, 300, 1, 1e-6), (200, 300, 2, 1e-6), (250, 96, 1, 1e-6),
                        (100, 96, 1, 1e-7), (10, 20, 2, 0.0)],
)  # fmt: skip
def test_erank_with_a_tail_near_the_rounding_bound(c, d, rank, eps):
    net = tailed(c, d, rank, eps, seed=c + d + rank)
    x, y = torch.randn(4, d), torch.randint(0, c, (4,))
    ref = brute_force(copy.deepcopy(net), x, y)
    got = alignctl.measure(net, x, y, metrics=SPEC, sketch=0)
    for name in SPEC:
        err = (got[name].double() - torch.as_tensor(ref[name])).abs() / torch.as_tensor(
            ref[name]
        ).abs().clamp_min(1)
        assert float(err.max()) <= 1e-4, (name, float(err.max()))
