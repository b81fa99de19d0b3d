"""Held-out checks of issue 17 (real architectures, many classes) after the geometry engine's
independence checks and the linear-input shortcut's per-chunk proofs: models that must be
measured, not refused as "samples interact", and whose values equal a float64 reference."""

import warnings

import numpy as np
import pytest
import torch
from test_geometry import REFERENCE
from torch import nn

import alignctl


def tokens(n, length=10, seed=0):
    """Right-padded token sequences (pad id 0; 0-4 pads each, never the first position)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(1, 96, (n, length), generator=g)
    for i in range(n):
        pads = int(torch.randint(0, length // 2, (1,), generator=g))
        if pads:
            t[i, length - pads :] = 0
    return t


class PaddedEncoder(nn.Module):
    """nn.TransformerEncoder with a key padding mask, pooled over every position (padding
    too): PyTorch's eval-mode fast path (nested tensors, taken only when nothing needs a
    gradient) gives padded positions 0 where the differentiable path computes them, so its
    logits are not those of a gradient-taking forward pass, at any batch size."""

    def __init__(self, pool="all"):
        super().__init__()
        self.emb = nn.Embedding(96, 32, padding_idx=0)
        layer = nn.TransformerEncoderLayer(32, 2, 64, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(32, 6)
        self.pool = pool

    def forward(self, t):
        h = self.enc(self.emb(t), src_key_padding_mask=t == 0)
        return self.head(h.mean(1) if self.pool == "all" else h[:, -1])


def at_embedding_reference(model, emb, t, y):
    """{metric: (n,)} from float64 per-sample Jacobians at the embedding's output, in
    gradient mode (the path a Jacobian is taken through)."""
    model = model.double().eval()
    out = {k: [] for k in REFERENCE}
    for i in range(t.shape[0]):
        ti = t[i : i + 1]
        e0 = emb(ti).detach().requires_grad_(True)

        def f(e, ti=ti):
            hook = emb.register_forward_hook(lambda m, a, o: e)
            try:
                return model(ti).reshape(-1)
            finally:
                hook.remove()

        jac = torch.autograd.functional.jacobian(f, e0).reshape(-1, e0.numel()).numpy()
        for k, fn in REFERENCE.items():
            out[k].append(fn(jac, e0.detach().reshape(-1).numpy(), int(y[i])))
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("frozen", ["all", "encoder"])
@pytest.mark.parametrize("pool", ["all", "last"])
def test_a_frozen_padded_transformer_encoder_is_measured_not_refused(frozen, pool):
    """Before: 'the model's outputs for a sample depend on the other samples of its batch (the
    first 8 of 12 samples run alone change their logits by 0.62 ...)': the chunk check ran
    its 8 samples without gradients, which a frozen encoder answers through the fast path."""
    torch.manual_seed(0)
    model = PaddedEncoder(pool).eval()
    (model if frozen == "all" else model.enc).requires_grad_(False)
    t, y = tokens(12), torch.arange(12) % 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's nested-tensor notices
        got = alignctl.measure(model, t, y, metrics="standard", max_memory="64MiB")
        ref = at_embedding_reference(model, model.emb, t[:4], y[:4])
    for name, values in got.items():
        np.testing.assert_allclose(values[:4].numpy(), ref[name], rtol=2e-4, atol=2e-5,
                                   err_msg=name)  # fmt: skip
