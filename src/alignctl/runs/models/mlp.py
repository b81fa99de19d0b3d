"""Fully connected network: Linear -> act -> ... -> Linear.

Used by the XOR, sparse parity, MNIST (Omnigrok) and modular addition setups (paper, App. A).
``init_scale`` multiplies every weight and bias after PyTorch's default init: Omnigrok's
large-initialisation trick (x8 for MNIST) that delays generalisation.
"""

from __future__ import annotations

import torch
from torch import nn

from alignctl.errors import short
from alignctl.runs.models import register_model
from alignctl.runs.validate import size, sizes

ACTIVATIONS = ("relu", "tanh", "gelu", "quadratic", "identity")


class Square(nn.Module):
    """sigma(z) = z**2, the quadratic activation of the modular addition MLP."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * z


def make_activation(name: str) -> nn.Module:
    table = {
        "relu": nn.ReLU,
        "tanh": nn.Tanh,
        "gelu": nn.GELU,
        "quadratic": Square,
        "identity": nn.Identity,
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return table[name]()


def scale_parameters(module: nn.Module, init_scale: float) -> None:
    """Multiply every parameter by ``init_scale`` (no-op for 1.0)."""
    if init_scale != 1.0:
        with torch.no_grad():
            for p in module.parameters():
                p.mul_(float(init_scale))


def _as_widths(hidden) -> list[int]:
    if isinstance(hidden, int):
        hidden = [hidden]
    widths = list(hidden)
    if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise ValueError(f"hidden must be a list of positive integers, got {short(hidden)}")
    return widths


def make_mlp(in_features, hidden, out_features, bias, activation, init_scale) -> nn.Sequential:
    """Linear(in, h1) act Linear(h1, h2) act ... Linear(hk, out); input (n, in) or (n, *shape)."""
    widths = [int(in_features), *_as_widths(hidden), int(out_features)]
    layers: list[nn.Module] = [nn.Flatten()]  # (n, *shape) -> (n, in_features)
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=bool(bias)))
        if i < len(widths) - 2:
            layers.append(make_activation(activation))
    net = nn.Sequential(*layers)
    scale_parameters(net, init_scale)
    return net


@register_model("mlp")
def mlp(
    in_features: int,
    hidden: list[int],
    out_features: int,
    bias: bool = True,
    activation: str = "relu",
    init_scale: float = 1.0,
) -> nn.Module:
    """MLP with the given hidden widths; output (n, out_features)."""
    return make_mlp(in_features, hidden, out_features, bias, activation, init_scale)


mlp.test_params = {"in_features": 6, "hidden": [5, 4], "out_features": 3}
mlp.test_input = lambda: torch.rand(2, 6)


def mlp_parameters(in_features, hidden, out_features, bias=True, **_) -> int:
    """Weights and biases :func:`make_mlp` creates for these sizes (the budget check,
    before anything is allocated); ValueError for a size below 1."""
    w = [size("in_features", in_features), *sizes("hidden", hidden)]
    w.append(size("out_features", out_features))
    return sum(a * b + (b if bias else 0) for a, b in zip(w, w[1:], strict=False))


mlp.n_parameters = mlp_parameters
