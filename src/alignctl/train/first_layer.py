"""The first layer's weight gradient of a ReLU-chain step as one matrix product.

Through the chain (:mod:`alignctl.train.relu_chain`) the first weight W (h, d) is used twice
in a step: by the batch's forward pass, h = x W^T (x: n x d), and by the penalty's last
product, u = a W (a: m x h, the masked rows of v^T J before W). Autograd differentiates each
use on its own: delta^T x and a^T g (delta = dL/dh, g = dL/du), two h x d products, the
second with only m rows, then a sum of the two h x d gradients. Both are one product of
stacked factors,

    dL/dW = delta^T x + a^T g = [delta; a]^T [x; g]                    (h x (n + m) x d),

the same sum of (n + m) d terms per entry (only the summation order differs from autograd's:
float rounding). For the XOR cluster's 2048 x 40000 first weight (328 MB) this skips a
memory-bound product with m = 25 rows, a weight-sized temporary and the pass that adds it.

:class:`FusedGrad` collects the factors while the backward pass runs (the two autograd
Functions below return no gradient for W) and, queued on the autograd engine
(``queue_callback``, as DistributedDataParallel does), forms W's gradient once the pass ends,
accumulating into ``W.grad`` as autograd would. Only the trainer turns it on
(:meth:`alignctl.train.relu_chain.ReluChain.fuse`), whose backward is ``loss.backward``:
``torch.autograd.grad`` would not see a gradient written to ``W.grad``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def available() -> bool:
    """Whether this torch lets a backward pass queue work for its end."""
    engine = getattr(torch.autograd.Variable, "_execution_engine", None)
    return callable(getattr(engine, "queue_callback", None))


class FusedGrad:
    """The factors [delta; a] and [x; g] of one backward pass, and W's gradient from them."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight
        self.left: list[torch.Tensor] = []
        self.right: list[torch.Tensor] = []

    def add(self, left: torch.Tensor, right: torch.Tensor) -> None:
        if not self.left:  # the first factor of this pass: form the gradient at its end
            torch.autograd.Variable._execution_engine.queue_callback(self.finish)
        self.left.append(left)
        self.right.append(right)

    def finish(self) -> None:
        # the largest factor first (the batch's), the others added in place into its result:
        # no stacked copy of x, no second weight-sized temporary
        pairs = sorted(zip(self.left, self.right, strict=True), key=lambda p: -p[0].shape[0])
        self.left, self.right = [], []
        grad = pairs[0][0].t() @ pairs[0][1]  # (h, d)
        for left, right in pairs[1:]:
            grad.addmm_(left.t(), right)
        w = self.weight
        if w.grad is None:
            w.grad = grad
        else:
            w.grad.add_(grad)


class _Forward(torch.autograd.Function):
    """h = x W^T + b, W's gradient left to :class:`FusedGrad`."""

    @staticmethod
    def forward(ctx, x, weight, bias, fused):
        ctx.fused, ctx.has_bias = fused, bias is not None
        ctx.save_for_backward(x)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_h):
        (x,) = ctx.saved_tensors
        ctx.fused.add(grad_h, x)
        return None, None, grad_h.sum(0) if ctx.has_bias else None, None


class _Product(torch.autograd.Function):
    """u = a W, W's gradient left to :class:`FusedGrad`."""

    @staticmethod
    def forward(ctx, a, weight, fused):
        ctx.fused = fused
        ctx.save_for_backward(a, weight)
        return a @ weight

    @staticmethod
    def backward(ctx, g):
        a, weight = ctx.saved_tensors
        ctx.fused.add(a, g)
        return (g @ weight.t() if ctx.needs_input_grad[0] else None), None, None


def forward(layer: torch.nn.Linear, x: torch.Tensor, fused: FusedGrad) -> torch.Tensor:
    """``layer(x)`` for a batch x (n, d); the weight's gradient collected by ``fused``."""
    return _Forward.apply(x, layer.weight, layer.bias, fused)


def product(a: torch.Tensor, layer: torch.nn.Linear, fused: FusedGrad) -> torch.Tensor:
    """``a @ layer.weight`` (m, d); the weight's gradient collected by ``fused``."""
    return _Product.apply(a, layer.weight, fused)
