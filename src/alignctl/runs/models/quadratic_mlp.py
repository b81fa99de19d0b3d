"""The modular addition MLP of Mallinar et al.: one hidden layer, activation z**2 (App. A)."""

from __future__ import annotations

import torch
from torch import nn

from alignctl.runs.models import register_model
from alignctl.runs.models.mlp import make_mlp, mlp_parameters


@register_model("quadratic-mlp")
def quadratic_mlp(
    in_features: int,
    hidden: list[int],
    out_features: int,
    bias: bool = True,
    init_scale: float = 1.0,
) -> nn.Module:
    """:func:`alignctl.models.mlp.mlp` with ``activation="quadratic"``."""
    return make_mlp(in_features, hidden, out_features, bias, "quadratic", init_scale)


quadratic_mlp.test_params = {"in_features": 6, "hidden": [5], "out_features": 3}
quadratic_mlp.test_input = lambda: torch.rand(2, 6)
quadratic_mlp.n_parameters = mlp_parameters
