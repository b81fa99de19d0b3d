"""scikit-learn's 8x8 digits (1797 real images shipped inside scikit-learn): the offline
stand-in for MNIST. 64 features scaled to [0, 1] (pixel / 16), 10 classes.
A shuffled round(1797 * test_fraction) samples are the test set; the train set is the rest,
or a subset of ``n_train`` of it.
"""

from __future__ import annotations

import torch

from alignctl.errors import missing_extra
from alignctl.runs.tasks import Dataset, register_task, sample_indices


@register_task("digits")
def digits(
    n_train: int | None = None, test_fraction: float = 0.2, seed: int = 0, normalize: bool = True
) -> Dataset:
    """x (n, 64) float32, y in 0..9; input_range (0, 1), or (0, 16) without ``normalize``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise missing_extra("the digits task", "scikit-learn", "digits") from None
    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32)  # (1797, 64) in 0..16
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    if normalize:
        x = x / 16.0
    n = x.shape[0]
    n_test = round(n * test_fraction)
    if not 1 <= n_test < n:
        raise ValueError(f"test_fraction {test_fraction} leaves an empty train or test set")
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    test, rest = perm[:n_test], perm[n_test:]
    train = rest[sample_indices(len(rest), n_train, gen, "digits n_train")] if n_train else rest
    return Dataset(
        x[train],
        y[train],
        x[test],
        y[test],
        num_classes=10,
        input_range=(0.0, 1.0) if normalize else (0.0, 16.0),
        name="digits",
    )


digits.test_params = {"n_train": 50}
