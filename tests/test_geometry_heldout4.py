"""Held-out inputs that fool a fast path (issue 2, issue 17 items 1 and 5): models that
satisfy a fast path's assumption on the samples its run-time check looks at (the first
chunk, the first few samples) and break it on later ones. Every value against the float64
per-sample reference of tests/test_geometry.py (via test_models_real.check), at the default
chunk size and at batch_size=1 and 3."""

import pytest
import torch
from test_models_real import check
from torch import nn

import alignctl
from alignctl.errors import InputError

# ---- 1. the linear-input shortcut: a path that only later samples take -------------------


class SomeSkip(nn.Module):
    """Exact per sample: a skip path added for the samples of large norm only, and computed
    only when a chunk holds one (an early exit / mixture-of-experts pattern). The first
    sample and the first chunk's checked samples never take it."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.skip = nn.Linear(6, 10), nn.Linear(10, 4), nn.Linear(6, 4)

    def forward(self, x):
        out = self.fc2(torch.tanh(self.fc1(x)))
        big = x.detach().norm(dim=1) > 3.0
        if big.any():
            out = out + torch.where(big[:, None], self.skip(x), torch.zeros_like(out))
        return out


class ScaledWhenBig(nn.Module):
    """The first layer reads 2 x instead of x for the large samples, rescaled only when a
    chunk holds one."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 10), nn.Linear(10, 4)

    def forward(self, x):
        big = x.detach().norm(dim=1, keepdim=True) > 3.0
        if big.any():
            x = torch.where(big, 2 * x, x)
        return self.fc2(torch.tanh(self.fc1(x)))


class LayerOnCopy(nn.Module):
    """Large samples reach the first layer through a sign flip of their first feature (a
    data-dependent augmentation left in eval): the layer's input is not x for them."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 10), nn.Linear(10, 4)

    def forward(self, x):
        big = x.detach().norm(dim=1) > 3.0
        if big.any():
            x = torch.cat([torch.where(big, -x[:, 0], x[:, 0])[:, None], x[:, 1:]], dim=1)
        return self.fc2(torch.tanh(self.fc1(x)))


def _late_big(n=14):
    torch.manual_seed(3)
    x = torch.randn(n, 6) * 0.5
    x[9:] *= 8  # past the first chunk of 3 and the checked samples of the default chunk
    return x, torch.randint(0, 4, (n,))


@pytest.mark.parametrize("model", [SomeSkip, ScaledWhenBig, LayerOnCopy])
@pytest.mark.parametrize("batch_size", [None, 1, 3])
def test_a_path_only_later_samples_take_is_not_shortcut(model, batch_size):
    torch.manual_seed(0)
    x, y = _late_big()
    check(model(), x, y, batch_size=batch_size)


# ---- 2. samples that interact where the independence check did not look --------------------


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(6, 8), nn.Linear(8, 3)

    def body(self, x):
        return self.head(torch.tanh(self.fc(x)))


class CentredWhenLarge(_Head):
    """Batch statistics only for batches over 16 samples (an 'auto batch norm' for large
    batches): the check ran 1, 4 and 8 samples, the measurement chunks of up to 1024."""

    def forward(self, x):
        if x.shape[0] > 16:
            x = x - x.mean(0, keepdim=True)
        return self.body(x)


class GradientOnly(_Head):
    """Samples interact through the gradient only: the batch mean enters with its value
    cancelled (m - m.detach()), so every logit equals the sample's own, run alone or not."""

    def forward(self, x):
        m = x.mean(0, keepdim=True)
        return self.body(x + (m - m.detach()))


@pytest.mark.parametrize("make", [CentredWhenLarge, GradientOnly])
@pytest.mark.parametrize("metrics", ["fast", "full"])
def test_samples_that_interact_beyond_the_first_logits_are_refused(make, metrics):
    """Before: measured silently, centroid_alignment off by up to 1.56 (CentredWhenLarge,
    default chunk) and 0.35 (GradientOnly) from the per-sample values."""
    torch.manual_seed(0)
    model, x = make(), torch.randn(40, 6)
    with pytest.raises(InputError, match="depend on the other samples of its batch"):
        alignctl.measure(model, x, torch.arange(40) % 3, metrics=metrics, device="cpu")
