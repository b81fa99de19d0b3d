"""Grokfast (Lee et al. 2024): amplify the slow components of the gradient.

Applied between ``backward()`` and ``step()``, per parameter tensor:

- ``filter=ema`` (default): m <- alpha m + (1 - alpha) g, then g <- g + lamb m; m starts as
  the first gradient. The paper uses alpha 0.8, lamb 0.1 in every setup (the reference
  defaults are 0.98 and 2.0).
- ``filter=ma``: a window of the last ``window`` gradients (the current one included);
  once it is full, g <- g + lamb * mean(window); until then gradients pass unchanged.
  The window stores copies: p.grad is zeroed in place between steps.
"""

from __future__ import annotations

import math
from collections import deque

import torch

from alignctl.errors import short
from alignctl.train.regularisers import Regulariser, count, real, register_regulariser


@register_regulariser("grokfast")
class Grokfast(Regulariser):
    name = "grokfast"

    def __init__(
        self, alpha: float = 0.8, lamb: float = 0.1, filter: str = "ema", window: int = 100
    ):
        if filter not in ("ema", "ma"):
            raise ValueError(f"filter must be ema or ma, not {short(filter)}")
        # alpha outside [0, 1] is no average (the filter grows geometrically)
        self.alpha, self.lamb = real("alpha", alpha, 0.0, 1.0), real("lamb", lamb, -math.inf)
        self.filter, self.window = filter, count("window", window, 1)
        self.m: dict[str, torch.Tensor] = {}
        self.hist: dict[str, deque] = {}

    def after_backward(self, model) -> None:
        for name, p in model.named_parameters():
            if p.grad is None:
                continue
            g = p.grad.detach()
            if self.filter == "ema":
                if name not in self.m:
                    self.m[name] = g.clone()
                else:
                    self.m[name].mul_(self.alpha).add_(g, alpha=1 - self.alpha)
                p.grad.add_(self.m[name], alpha=self.lamb)
            else:
                h = self.hist.setdefault(name, deque(maxlen=self.window))
                h.append(g.clone())
                if len(h) == self.window:
                    p.grad.add_(torch.stack(tuple(h)).mean(0), alpha=self.lamb)

    def state_dict(self) -> dict:
        if self.filter == "ema":
            return {"m": {k: v.clone() for k, v in self.m.items()}}
        return {"window": {k: torch.stack(tuple(h)) for k, h in self.hist.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.m = {k: v.clone() for k, v in state.get("m", {}).items()}
        self.hist = {
            k: deque(list(v), maxlen=self.window) for k, v in state.get("window", {}).items()
        }
