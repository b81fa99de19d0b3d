"""A model with a non-finite weight has no Jacobian: every metric of every affected sample is
NaN (qa6). An infinite weight gave NaN norms next to alignments, PC1 and effective ranks of
exactly 0.0 (ratios of NaNs guarded by ``den > 0``), on the exact path and under the sketch."""

import pytest
import torch
from torch import nn

import alignctl


def _net(classes, where, value):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, classes))
    with torch.no_grad():
        net[where].weight[0, 0] = value
    return net


@pytest.mark.parametrize("classes, sketch", [(30, 0), (300, None), (300, 4)])
@pytest.mark.parametrize("where", [0, 2])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_weights_give_nan_for_every_metric(classes, sketch, where, value):
    net = _net(classes, where, value)
    x, y = torch.randn(5, 4), torch.randint(0, classes, (5,))
    notes, errors = [], {}
    got = alignctl.measure(net, x, y, sketch=sketch, notes=notes, errors=errors)
    for m, v in got.items():
        assert bool(v.isnan().all()), (m, v)
    for m, e in errors.items():
        assert bool(e.isnan().all()), m
    assert any("non-finite metric" in n for n in notes)


def test_finite_models_are_untouched():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 30))
    x = torch.randn(6, 4)
    x[2] = 0  # a zero input: |J x_hat| taken as 0, every value finite
    notes = []
    got = alignctl.measure(net, x, torch.randint(0, 30, (6,)), notes=notes)
    assert all(bool(v.isfinite().all()) for v in got.values())
    assert not any("non-finite" in n for n in notes)
