"""Modular addition (paper Table 1, App. A and E): all p*p pairs (a, b), label (a + b) mod p,
shuffled with the seed; the first floor(p*p * train_fraction) pairs are the training set.

encoding "onehot" (MLP, Mallinar et al.): x = concat(onehot(a), onehot(b)), 2p floats.
encoding "tokens" (transformer, Nanda et al.): x = [a, b, p] int64, p being the "=" token.
"""

from __future__ import annotations

import torch

from alignctl.errors import short
from alignctl.runs.tasks import Dataset, register_task


@register_task("modular-addition")
def modular_addition(
    p: int = 61, train_fraction: float = 0.5, encoding: str = "onehot", seed: int = 0
) -> Dataset:
    """(a + b) mod p over all pairs; num_classes p."""
    if encoding not in ("onehot", "tokens"):
        raise ValueError(f"encoding must be 'onehot' or 'tokens', got {short(encoding)}")
    if p < 2:
        raise ValueError(f"p must be >= 2, got {p}")
    n_train = int(p * p * train_fraction)
    if not 1 <= n_train < p * p:
        raise ValueError(f"train_fraction {train_fraction} leaves an empty train or test set")
    a = torch.arange(p).repeat_interleave(p)  # (p*p,)
    b = torch.arange(p).repeat(p)
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(int(seed)))
    a, b = a[perm], b[perm]
    y = (a + b) % p
    if encoding == "onehot":
        eye = torch.eye(p)
        x = torch.cat([eye[a], eye[b]], dim=1)  # (p*p, 2p)
        input_range = (0.0, 1.0)
    else:
        x = torch.stack([a, b, torch.full_like(a, p)], dim=1)  # (p*p, 3) tokens
        input_range = None
    return Dataset(
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        num_classes=p,
        input_range=input_range,
        name="modular-addition",
        meta={"encoding": encoding},
    )


modular_addition.test_params = {"p": 5}
modular_addition.elements = lambda p, encoding, **_: (
    p * p * (2 * p + 1 if encoding == "onehot" else 4)
)
