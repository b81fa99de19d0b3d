"""XOR cluster (Xu et al.; paper Fig. 2, Table 1, App. A).

x in R^dim with x_1, x_2 uniform in {-1, +1} and the other dim - 2 entries uniform in
{-eps, +eps}; label y = x_1 x_2 in {-1, +1} (scalar-output binary task, num_classes 1).
Grokked (authors' code): test accuracy and accuracy under Gaussian noise of std 0.2 added to
coordinates 2: of the test set both > 95%; ``meta`` carries that criterion.
"""

from __future__ import annotations

import torch

from alignctl.runs.tasks import Dataset, register_task


def _signs(gen: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen, dtype=torch.int8) * 2 - 1


@register_task("xor-cluster")
def xor_cluster(
    n_train: int = 400, n_test: int = 400, dim: int = 40000, eps: float = 0.05, seed: int = 0
) -> Dataset:
    """Train and test sets drawn from one generator (train first)."""
    if n_train < 1 or n_test < 1 or dim < 3:
        raise ValueError("xor-cluster needs n_train >= 1, n_test >= 1 and dim >= 3")
    gen = torch.Generator().manual_seed(int(seed))
    n = n_train + n_test
    signs = _signs(gen, (n, dim)).float()  # (n, dim) in {-1, +1}
    x = signs * float(eps)
    x[:, :2] = signs[:, :2]  # the two informative coordinates are +-1
    y = (signs[:, 0] * signs[:, 1]).long()  # (n,) in {-1, +1}
    return Dataset(
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        num_classes=1,
        name="xor-cluster",
        meta={"noise_std": 0.2, "noise_from": 2},
    )


xor_cluster.test_params = {"n_train": 8, "n_test": 8, "dim": 10}
xor_cluster.elements = lambda n_train, n_test, dim, **_: (n_train + n_test) * (dim + 1)
