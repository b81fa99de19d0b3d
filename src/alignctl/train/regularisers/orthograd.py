"""⊥Grad / OrthoGrad (Prieto et al. 2025): keep only the gradient component orthogonal to
the weights, rescaled to the gradient's norm, so steps cannot just scale the weights up.

Per parameter tensor w with gradient g, each flattened on its own:
g_perp = g - (w.g) / (w.w + 1e-30) w, then g <- g_perp * norm(g) / (norm(g_perp) + 1e-30).
w = 0 leaves g unchanged. Applied before the wrapped optimiser steps.
"""

from __future__ import annotations

import torch

from alignctl.train.regularisers import Regulariser, register_regulariser


@register_regulariser("orthograd")
class OrthoGrad(Regulariser):
    name = "orthograd"

    @torch.no_grad()
    def after_backward(self, model) -> None:
        for p in model.parameters():
            if p.grad is None:
                continue
            w, g = p.detach().reshape(-1), p.grad.reshape(-1)
            g_perp = g - (w @ g) / (w @ w + 1e-30) * w
            p.grad.copy_((g_perp * (g.norm() / (g_perp.norm() + 1e-30))).view_as(p.grad))
