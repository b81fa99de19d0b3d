"""The CIFAR10 CNN of the paper's robustness experiment (Fig. 5, App. A).

``n_conv`` 3x3 convolutions (padding 1), ``channels`` filters in the first, doubling at each
layer, each followed by ReLU and, while the spatial size is still > 1, a 2x2 max-pool; then
flatten -> Linear(fc) -> ReLU -> Linear(out_features). Input (n, C, H, W).

Pooling choice (the paper does not say): a pool after every conv while the side is > 1 takes a
32x32 image to 1x1 after five layers (32 -> 16 -> 8 -> 4 -> 2 -> 1), so the FC layer sees
channels * 2**(n_conv-1) = 512 features; a 28x28 image stops pooling at 1x1 after four layers.
"""

from __future__ import annotations

import torch
from torch import nn

from alignctl.runs.models import register_model
from alignctl.runs.models.mlp import scale_parameters
from alignctl.runs.validate import size


class CNN(nn.Module):
    def __init__(
        self, in_channels, image_size, channels, n_conv, fc, out_features, bias, init_scale
    ):
        super().__init__()
        if min(in_channels, image_size, channels, n_conv, fc, out_features) < 1:
            raise ValueError("cnn sizes must all be positive integers")
        layers: list[nn.Module] = []
        c_in, side, c_out = int(in_channels), int(image_size), int(channels)
        for _ in range(int(n_conv)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=bool(bias)), nn.ReLU()]
            if side > 1:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            c_in, c_out = c_out, c_out * 2
        self.features = nn.Sequential(*layers)  # (n, C, H, W) -> (n, c_in, side, side)
        self.head = nn.Sequential(
            nn.Flatten(),  # (n, c_in * side * side)
            nn.Linear(c_in * side * side, int(fc), bias=bool(bias)),
            nn.ReLU(),
            nn.Linear(int(fc), int(out_features), bias=bool(bias)),
        )
        scale_parameters(self, init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (n, out_features)


@register_model("cnn")
def cnn(
    in_channels: int = 3,
    image_size: int = 32,
    channels: int = 32,
    n_conv: int = 5,
    fc: int = 256,
    out_features: int = 10,
    bias: bool = True,
    init_scale: float = 1.0,
) -> nn.Module:
    """Conv stack + FC head (see the module docstring for the pooling rule)."""
    return CNN(in_channels, image_size, channels, n_conv, fc, out_features, bias, init_scale)


# small params for the registry-driven tests (tests/test_models.py)
cnn.test_params = {"in_channels": 1, "image_size": 8, "channels": 2, "n_conv": 3, "fc": 4}
cnn.test_input = lambda: torch.rand(2, 1, 8, 8)


def cnn_parameters(in_channels=3, image_size=32, channels=32, n_conv=5, fc=256, out_features=10,
                   bias=True, **_) -> int:  # fmt: skip
    """Weights and biases :class:`CNN` creates (the budget check, nothing allocated)."""
    c_in, side, c_out = (
        size("in_channels", in_channels),
        size("image_size", image_size),
        size("channels", channels),
    )
    n = 0
    for _ in range(size("n_conv", n_conv)):
        n += c_in * c_out * 9 + (c_out if bias else 0)
        if n > 2**62:  # channels double per layer: past any budget, stop counting
            return n
        side = side // 2 if side > 1 else side
        c_in, c_out = c_out, c_out * 2
    fc, out = size("fc", fc), size("out_features", out_features)
    return n + c_in * side * side * fc + fc * out + ((fc + out) if bias else 0)


cnn.n_parameters = cnn_parameters
