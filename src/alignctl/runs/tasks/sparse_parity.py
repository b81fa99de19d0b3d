"""Sparse parity (paper Table 1, App. A): random n_bits-bit strings, label = parity of the
first k bits. Bits are fed as 0/1 floats: with +-1 inputs the baseline did not grok within
8000 epochs (SETUPS.md). The first round(n * train_fraction) strings are the training set.
"""

from __future__ import annotations

import torch

from alignctl.runs.tasks import Dataset, register_task


@register_task("sparse-parity")
def sparse_parity(
    n: int = 2000, n_bits: int = 40, k: int = 3, train_fraction: float = 0.5, seed: int = 0
) -> Dataset:
    """y = (x_1 + ... + x_k) mod 2, x uniform in {0, 1}^n_bits; num_classes 2."""
    if not 1 <= k <= n_bits:
        raise ValueError(f"sparse-parity needs 1 <= k <= n_bits, got k={k}, n_bits={n_bits}")
    n_train = round(n * train_fraction)
    if not 1 <= n_train < n:
        raise ValueError(f"train_fraction {train_fraction} leaves an empty train or test set")
    gen = torch.Generator().manual_seed(int(seed))
    bits = torch.randint(0, 2, (n, n_bits), generator=gen)  # (n, n_bits) int64
    y = bits[:, :k].sum(dim=1) % 2
    x = bits.float()
    return Dataset(
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        num_classes=2,
        input_range=(0.0, 1.0),
        name="sparse-parity",
    )


sparse_parity.test_params = {"n": 40, "n_bits": 6, "k": 3}
sparse_parity.elements = lambda n, n_bits, **_: n * (n_bits + 1)  # x and y, for the budget
