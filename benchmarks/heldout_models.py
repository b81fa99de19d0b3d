"""The networks of the held-out verdict runs (benchmarks/verdict_heldout.py): architectures the
verdict corpus (benchmarks/corpus_models.py) does not have. Copied into every run folder as
``models.py`` and named by its ``alignctl.yaml`` (``factory: models.py:make_net``); the
Lightning / Hugging Face modules wrap them as ``net``, so the checkpoints' keys are
``net.*`` (Lightning) or ``net.*`` in ``model.safetensors`` (Hugging Face)."""

from __future__ import annotations

import torch
from torch import nn


class ResMLP(nn.Module):
    """x -> Linear -> blocks of h + W2 silu(W1 h) (no normalisation) -> Linear; ``scale``
    divides the input first (a network fed raw [0, 255] values, normalised inside)."""

    def __init__(self, d, c, width=128, blocks=2, scale=1.0, bottleneck=None):
        super().__init__()
        self.scale = scale
        self.inp = nn.Linear(d, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
            for _ in range(blocks)
        )
        self.neck = nn.Linear(width, bottleneck) if bottleneck else None
        self.out = nn.Linear(bottleneck or width, c)

    def forward(self, x):
        h = self.inp(x.flatten(1) / self.scale)
        for b in self.blocks:
            h = h + b(h)
        if self.neck is not None:
            h = torch.relu(self.neck(h))
        return self.out(h)


class PlainCNN(nn.Module):
    """(n, 1, s, s) in [0, 255] -> conv-ReLU-pool x2 (no BatchNorm) -> linear."""

    def __init__(self, c, size=12, channels=8):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * channels * (size // 4) ** 2, c),
        )  # fmt: skip

    def forward(self, x):
        return self.body(x / 255.0)


class TinyAttention(nn.Module):
    """Two tokens (a, b) -> token + position embeddings -> one single-head self-attention layer
    (residual) -> MLP on the last position -> p logits. Token-model protocol: ``embed`` /
    ``forward_embedded`` (the Jacobian is taken at the embedding)."""

    def __init__(self, p, d=32, hidden=128):
        super().__init__()
        self.tok = nn.Embedding(p, d)
        self.pos = nn.Parameter(torch.randn(2, d) * 0.1)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, p))
        self.d = d

    def embed(self, tokens):
        return self.tok(tokens) + self.pos

    def forward_embedded(self, e):
        q, k, v = self.qkv(e).chunk(3, -1)
        att = torch.softmax(q @ k.transpose(1, 2) / self.d**0.5, -1)
        h = e + att @ v
        return self.mlp(h[:, -1])

    def forward(self, tokens):
        return self.forward_embedded(self.embed(tokens))


def mlp(d, hidden, c, act="silu"):
    acts = {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU}
    layers, widths = [], [d, *hidden]
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), acts[act]()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], c))


def make_net(kind: str, **kw) -> nn.Module:
    """The factory named by every held-out run's alignctl.yaml."""
    return {"resmlp": ResMLP, "cnn": PlainCNN, "attn": TinyAttention, "mlp": mlp}[kind](**kw)
