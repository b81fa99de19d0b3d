"""One-layer transformer for modular addition, after Nanda et al. (paper, App. E, Fig. 8).

Tokens [a, b, =] with "=" the token id p (vocabulary p + 1). No LayerNorm, as in Nanda et al.:
    e     = W_E[tokens] + W_pos                      (n, L, d)
    r     = e + Attn(e)          causal, n_heads heads of size d / n_heads
    r     = r + W_out ReLU(W_in r + b_in) + b_out
    logits = r[:, -1] W_U                            (n, C)
Token-model protocol (docs/config.md): ``embed(tokens) -> e`` and ``forward_embedded(e)``;
the geometry code takes the Jacobian with respect to ``e``, as the paper does.
Weights are drawn N(0, 1/d_model) like Nanda et al.'s code; ``init_scale`` multiplies them all.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from alignctl.runs.models import register_model
from alignctl.runs.models.mlp import scale_parameters
from alignctl.runs.validate import size


class ModAddTransformer(nn.Module):
    def __init__(self, p, d_model, n_heads, d_mlp, n_ctx, out_features, init_scale):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if min(p, d_model, n_heads, d_mlp, n_ctx, out_features) < 1:
            raise ValueError("transformer sizes must all be positive integers")
        d, s = int(d_model), 1.0 / math.sqrt(d_model)
        self.n_heads, self.d_head, self.n_ctx = int(n_heads), d // int(n_heads), int(n_ctx)
        self.W_E = nn.Parameter(torch.randn(p + 1, d) * s)
        self.W_pos = nn.Parameter(torch.randn(n_ctx, d) * s)
        self.W_Q = nn.Parameter(torch.randn(d, d) * s)
        self.W_K = nn.Parameter(torch.randn(d, d) * s)
        self.W_V = nn.Parameter(torch.randn(d, d) * s)
        self.W_O = nn.Parameter(torch.randn(d, d) * s)
        self.W_in = nn.Parameter(torch.randn(d, d_mlp) * s)
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.randn(d_mlp, d) * (1.0 / math.sqrt(d_mlp)))
        self.b_out = nn.Parameter(torch.zeros(d))
        self.W_U = nn.Parameter(torch.randn(d, out_features) * s)
        mask = torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool))
        self.register_buffer("mask", mask, persistent=False)
        scale_parameters(self, init_scale)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, L) int64 -> (n, L, d_model): token plus position embedding."""
        L = tokens.shape[1]
        if L > self.n_ctx:
            raise ValueError(f"sequence length {L} exceeds n_ctx {self.n_ctx}")
        return self.W_E[tokens] + self.W_pos[:L]

    def forward_embedded(self, e: torch.Tensor) -> torch.Tensor:
        """(n, L, d_model) -> (n, C), the logits at the last position."""
        n, L, d = e.shape
        h, dh = self.n_heads, self.d_head

        def heads(w: torch.Tensor) -> torch.Tensor:
            return (e @ w).view(n, L, h, dh).transpose(1, 2)  # (n, h, L, dh)

        q, k, v = heads(self.W_Q), heads(self.W_K), heads(self.W_V)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # (n, h, L, L)
        scores = scores.masked_fill(~self.mask[:L, :L], float("-inf"))
        z = torch.softmax(scores, dim=-1) @ v  # (n, h, L, dh)
        r = e + z.transpose(1, 2).reshape(n, L, d) @ self.W_O
        r = r + torch.relu(r @ self.W_in + self.b_in) @ self.W_out + self.b_out
        return r[:, -1] @ self.W_U  # (n, C)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.forward_embedded(self.embed(tokens))


@register_model("transformer")
def transformer(
    p: int = 113,
    d_model: int = 128,
    n_heads: int = 4,
    d_mlp: int = 512,
    n_ctx: int = 3,
    out_features: int | None = None,
    init_scale: float = 1.0,
) -> nn.Module:
    """Nanda et al.'s one-layer transformer; ``out_features`` defaults to p."""
    return ModAddTransformer(
        p, d_model, n_heads, d_mlp, n_ctx, p if out_features is None else out_features, init_scale
    )


transformer.test_params = {"p": 5, "d_model": 8, "n_heads": 2, "d_mlp": 16}
transformer.test_input = lambda: torch.randint(0, 6, (2, 3))


def transformer_parameters(p=113, d_model=128, n_heads=4, d_mlp=512, n_ctx=3, out_features=None,
                           **_) -> int:  # fmt: skip
    """Parameters and the causal-mask buffer of :class:`ModAddTransformer` (the budget check,
    nothing allocated)."""
    p, d, m, c = size("p", p), size("d_model", d_model), size("d_mlp", d_mlp), size("n_ctx", n_ctx)
    size("n_heads", n_heads)
    out = p if out_features is None else size("out_features", out_features)
    return (p + 1) * d + c * d + 4 * d * d + 2 * d * m + m + d + d * out + c * c


transformer.n_parameters = transformer_parameters
