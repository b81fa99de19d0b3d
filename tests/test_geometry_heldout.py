"""Held-out kinds of issue 11 (qa12): first layers that the linear-input shortcut must not
take, and Jacobians that underflow float32; every value against the float64 per-sample
reference of tests/test_geometry.py (via test_models_real.check).

The "dead unit" construction makes the run-time check of the first samples blind: the first
layer's weight as stored differs from the one that acts only in row 0, and unit 0 is off
(ReLU) for the first four samples, so J_h W and the true Jacobian agree there and differ on
every later sample. Only the structural rules can keep the shortcut away."""

import functools
import types

import numpy as np
import torch
import torch.nn.functional as F
from test_models_real import check
from torch import nn

import alignctl

MASK = torch.ones(16, 8)
MASK[0, 1:] = 0  # the acting weight's row 0 reads x_0 only; the stored one reads all of x


class DeadUnit(nn.Module):
    def __init__(self, first=None):
        super().__init__()
        self.fc1 = first if first is not None else nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 3)
        with torch.no_grad():
            self.fc1.weight[0] = 5.0
            self.fc1.weight[0, 0] = 1.0
            self.fc1.bias[0] = 0.0

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def dead_x(n=8):
    x = torch.randn(n, 8)
    x[:4, 0], x[4:, 0] = -10.0, 10.0  # unit 0 off for the checked samples, on for the rest
    return x


def _masked_forward(self, x):
    return F.linear(x, self.weight * MASK, self.bias)


def instance_forward():
    """layer.forward = ... (LoRA injection, offloading hooks): type(layer).forward is
    nn.Linear's, the instance's own attribute is what runs."""
    net = DeadUnit()
    net.fc1.forward = types.MethodType(_masked_forward, net.fc1)
    return net


class CallImpl(nn.Linear):
    def _call_impl(self, x):
        return _masked_forward(self, x)


class Hyper(nn.Module):
    """torch.func.functional_call with another weight (hypernetworks, MAML): the layer runs
    nn.Linear.forward with a tensor it does not hold after the call."""

    def __init__(self):
        super().__init__()
        self.inner = DeadUnit()

    def forward(self, x):
        w = self.inner.fc1.weight * MASK
        return torch.func.functional_call(self.inner, {"fc1.weight": w}, (x,))


class Restored(nn.Module):
    """Masks the weight in place through .data (no version bump) and restores it."""

    def __init__(self):
        super().__init__()
        self.inner = DeadUnit()

    def forward(self, x):
        w = self.inner.fc1.weight
        keep = w.data.clone()
        w.data.mul_(MASK)
        try:
            return self.inner(x)
        finally:
            w.data.copy_(keep)


class Strided(nn.Module):
    """as_strided that transposes each sample's 2x4 block before the first layer: a
    reordering, not a view the shortcut may look through. Rows 1.. of fc1 are constant, so
    only row 0 (off for the first samples) tells the orders apart."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 3)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.randn(16, 1).expand(16, 8))
            self.fc1.weight[0] = 0.0
            self.fc1.weight[0, 0], self.fc1.weight[0, 1] = 1.0, 4.0
            self.fc1.bias[0] = 0.0

    def forward(self, x):
        n = x.shape[0]
        z = torch.as_strided(x.reshape(n, 2, 4), (n, 4, 2), (8, 1, 4))
        return self.fc2(torch.relu(self.fc1(z.reshape(n, 8))))


CASES = {
    "instance_forward": instance_forward,
    "call_impl": lambda: DeadUnit(CallImpl(8, 16)),
    "functional_call": Hyper,
    "restored_in_place": Restored,
    "as_strided": Strided,
}


def test_shortcut_rules_cover_what_the_first_samples_cannot_show():
    for name, make in CASES.items():
        torch.manual_seed(0)
        model, x = make(), dead_x()
        if name == "as_strided":
            x[:, 4] = x[:, 4].clamp(-1, 1)  # x_0 + 4 x_4 < 0 on the first samples
        y = torch.randint(0, 3, (8,))
        check(model, x, y)


def test_a_wrapped_forward_still_measures_right():
    """An offloading-style wrapper (functools.partial around the original forward) changes
    nothing: the generic path gives the same values."""
    torch.manual_seed(0)
    net = DeadUnit()
    old = net.fc1.forward
    net.fc1.forward = functools.update_wrapper(functools.partial(lambda m, a: old(a), net.fc1), old)
    x, y = dead_x(), torch.randint(0, 3, (8,))
    got = alignctl.measure(net, x, y)
    plain = DeadUnit()
    plain.load_state_dict(net.state_dict())
    want = alignctl.measure(plain, x, y, dtype=torch.float64)
    for k, v in got.items():
        np.testing.assert_allclose(v.double().numpy(), want[k].numpy(), rtol=2e-4, atol=2e-4)


def _tiny(scale, conv=False):
    if conv:
        layers = [nn.Unflatten(1, (1, 8)), nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(12, 16),
                  nn.Tanh(), nn.Linear(16, 3)]  # fmt: skip
    else:
        layers = [nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                  nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)]  # fmt: skip
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


def test_jacobians_that_underflow_float32_are_measured_in_float64():
    """Weights 1e-15 over four layers: J ~ 1e-60 is 0 in float32, and every alignment, PC1
    and effective rank read 0 (the linear-input path and the generic one)."""
    for conv in (False, True):
        torch.manual_seed(0)
        model, x, y = _tiny(1e-15, conv), torch.randn(6, 8), torch.randint(0, 3, (6,))
        check(model, x, y, f64=False)
        notes = []
        got = alignctl.measure(model, x, y, metrics="fast", notes=notes)
        assert any("underflow" in n for n in notes)
        assert bool((got["centroid_alignment"].abs() > 1e-3).all())
        assert bool((got["centroid_norm"] > 0).all())  # 1e-60: kept in float64


def test_a_jacobian_that_is_zero_stays_zero_and_float32():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # every unit off: J = 0 exactly
    got = alignctl.measure(model, torch.randn(5, 8), torch.randint(0, 3, (5,)))
    for v in got.values():
        assert v.dtype == torch.float32 and bool((v == 0).all())


def test_a_zero_jacobian_adds_no_underflow_note():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)
    notes = []
    alignctl.measure(model, torch.randn(5, 8), torch.randint(0, 3, (5,)), notes=notes)
    assert notes == []
