"""The monitor's fast path: the scaling decision taken from the rows' norms is pow2_scale's
own, measure hands back the logits of its forward pass, and a measurement forwards the
probe once."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import alignctl
from alignctl.geometry.metrics.quantities import SAFE, pow2_scale, pow2_scale_rows
from alignctl.integrations.probe import Probe

EXPONENTS = st.integers(-140, 140)
SPECIAL = st.sampled_from([0.0, float("inf"), float("-inf"), float("nan")])


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(EXPONENTS, st.integers(1, 40), st.one_of(st.none(), SPECIAL), st.integers(0, 9)),
        min_size=1, max_size=6,
    ),
    d=st.integers(1, 300),
)  # fmt: skip
def test_the_norm_decision_is_pow2_scale_exactly(rows, d):
    """Rows of magnitude 2^e (denormals, overflow, zeros, inf, nan included): the scaled
    tensor and scales equal pow2_scale's bit for bit, the norms are the scaled rows' norms."""
    g = torch.Generator().manual_seed(d)
    t = torch.empty(len(rows), d)
    for i, (e, spread, special, seed) in enumerate(rows):
        base = torch.randn(d, generator=g) * 2.0 ** (spread % 7 - seed % 4)
        t[i] = (base.double() * 2.0**e).float()
        if special is not None:
            t[i, seed % d] = special
    ts, scale, norm = pow2_scale_rows(t)
    want_ts, want_scale = pow2_scale(t, 1)
    torch.testing.assert_close(ts, want_ts, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(scale, want_scale, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(norm, want_ts.norm(dim=-1), rtol=0, atol=0, equal_nan=True)


def test_the_norm_bounds_are_where_pow2_scale_switches():
    d = 64
    at = torch.full((2, d), 2.0 * math.sqrt(d) / SAFE / math.sqrt(d))  # norm at the bound
    ts, scale, _ = pow2_scale_rows(at)
    assert ts is at and bool((scale == 1).all())
    tiny = torch.full((1, d), 0.9 / SAFE)  # below: rescaled, as pow2_scale does
    assert not bool((pow2_scale_rows(tiny)[1] == 1).all())


def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(12, 9), torch.nn.ReLU(), torch.nn.Linear(9, 4)
    )


def test_measure_hands_back_the_logits_of_its_forward_pass():
    model, x = net().eval(), torch.randn(37, 3, 4)
    outs: list = []
    alignctl.measure(model, x, metrics=["centroid_alignment"], batch_size=10, outputs=outs)
    assert len(outs) == 1
    torch.testing.assert_close(outs[0], model(x).detach())
    alignctl.measure(model, x, metrics=["jacobian_norm"], batch_size=10, outputs=outs)
    assert len(outs) == 1  # the whole Jacobian's forward passes too (issue 17, item 6)
    torch.testing.assert_close(outs[0], model(x).detach())
    outs.append("stale")  # the list is cleared, then filled or left empty
    many = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 40))  # C > 2K: sketched
    alignctl.measure(many, x, metrics=["jacobian_norm"], sketch=2, outputs=outs)
    assert outs == []  # the sketch takes no plain forward pass


def test_a_probe_measurement_forwards_the_probe_once():
    model, x = net(), torch.randn(50, 3, 4)
    y = torch.randint(0, 4, (50,))
    rows = []
    model[1].register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    probe = Probe(x, y, metrics="fast")
    entry = probe.measure(model, 0)
    assert rows.count(50) == 1, rows  # measure's pass; the accuracy reuses its logits
    with torch.no_grad():
        want = float((model.eval()(x).argmax(1) == y).double().mean())
    assert entry["train_accuracy"] == pytest.approx(want, abs=1e-7)
