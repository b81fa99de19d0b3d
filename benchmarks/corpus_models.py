"""The networks of the verdict corpus (benchmarks/verdict_corpus.py).

This file is copied into every corpus run folder and named by its ``alignctl.yaml`` as the
model factory (``factory: models.py:make_net``), so alignctl loads the checkpoints the way a
user's own code would: through the factory protocol, not through alignctl's built-in models.
"""

from __future__ import annotations

import torch
from torch import nn

ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class Scalar(nn.Module):
    """A body with one output, returned as (n,) (binary labels -1/+1)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x).squeeze(-1)


class TokenNet(nn.Module):
    """Embedding of two tokens (a, b) -> MLP -> p logits; follows alignctl's token-model
    protocol (embed / forward_embedded), so the Jacobian is taken at the embedding."""

    def __init__(self, p: int, d_emb: int = 24, hidden: int = 128):
        super().__init__()
        self.emb = nn.Embedding(p, d_emb)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * d_emb, hidden), nn.ReLU(), nn.Linear(hidden, p)
        )

    def embed(self, tokens):
        return self.emb(tokens)  # (n, 2, d_emb)

    def forward_embedded(self, e):
        return self.head(e)

    def forward(self, tokens):
        return self.forward_embedded(self.embed(tokens))


def mlp(d, hidden, c, *, bias=True, act="relu", layernorm=False, dropout=0.0, init_scale=1.0):
    widths = [d, *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers.append(nn.Linear(a, b, bias=bias))
        if layernorm:
            layers.append(nn.LayerNorm(b))
        layers.append(ACT[act]())
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(widths[-1], c, bias=bias))
    net = nn.Sequential(*layers)
    if init_scale != 1.0:
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(init_scale)
    return net


def cnn_bn(c=10, channels=8):
    """(n, 1, 8, 8) -> conv-BN-ReLU-pool x2 -> linear."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.BatchNorm2d(2 * channels), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * channels * 4, c),
    )  # fmt: skip


def make_net(kind: str, **kw) -> nn.Module:
    """The factory named by every plain-loop run's alignctl.yaml."""
    if kind == "mlp":
        return mlp(**kw)
    if kind == "scalar_mlp":
        return Scalar(mlp(c=1, **kw))
    if kind == "cnn_bn":
        return cnn_bn(**kw)
    if kind == "token":
        return TokenNet(**kw)
    raise ValueError(f"unknown kind {kind!r}")
