"""The Jacobian of a ReLU network as a chain of weight products: a Jacobian penalty's gradient
without a double backward.

For f(x) = W_L s(W_{L-1} ... s(W_1 x + b_1) ... + b_{L-1}) + b_L with s = ReLU, the Jacobian
at x is J(x) = W_L D_{L-1} W_{L-1} ... D_1 W_1, D_l = diag(1[z_l > 0]), z_l the
pre-activation of layer l (biases enter only through the masks). For v (m, C)

    v^T J = (((v W_L) * m_{L-1}) W_{L-1} ... * m_1) W_1                       (m, d)

is a product of the weights with masks that are piecewise constant in the weights, so the
gradient of a penalty built from it is an ordinary first-order backward through these
products. That is exactly what autograd's create-graph vector-Jacobian product and its double
backward compute: ReLU's backward is ``grad * (z > 0)`` (``threshold_backward``), whose
derivative in z is zero almost everywhere, so the double backward sends nothing back through
the masks (it still multiplies that zero out). The chain skips that zero path, the
differentiable input, the create-graph pass through the whole forward graph and, for a subset
of the batch (GrokAlign's ``subsample``), a second forward pass: the masks are the batch's
own, taken in its forward pass. On the XOR cluster's 40000-2048-1 network this makes
``grokalign:subsample=0.125`` cost about as much as a plain step (``benchmarks/xor_step.py``).

Taken only when the model is provably such a network (:meth:`ReluChain.of`): exactly an
``nn.Sequential`` (not a subclass, which may override ``forward``) of an optional
``nn.Flatten()`` and then ``Linear (ReLU|Identity Linear)*``, every Linear plain (its call is
exactly ``F.linear``: no hooks, forward or backward, no parametrization, no subclass), no
hooks on the container, no global module hooks, float inputs (not tokens); re-checked before
every step (:meth:`ReluChain.intact`: a hook registered mid-run sends that step to autograd).
Floating-point results differ from the generic path by the order of summation only (and a
mask where a pre-activation is within rounding of 0); :func:`agrees` compares the two on the
first penalised step of every run.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as _module

from alignctl.geometry.linear_input import _global_hooks, _plain_linear

ACTIVATIONS = (nn.ReLU, nn.Identity)


def _bare(m: nn.Module) -> bool:
    return (
        type(m).__call__ is nn.Module.__call__ and not m._forward_hooks and not m._forward_pre_hooks
    ) and _no_backward_hooks(m)


def _no_backward_hooks(m: nn.Module) -> bool:
    """No backward hook on m: one may rewrite the gradients autograd's penalty flows through,
    which the chain's weight products never see."""
    return not m._backward_hooks and not m._backward_pre_hooks


def _is_relu_mlp(model: nn.Module) -> bool:
    """Exactly an nn.Sequential, no hooks on it or global ones, of an optional nn.Flatten()
    and then ``Linear (ReLU|Identity Linear)*``, plain Linears, float parameters."""
    if type(model) is not nn.Sequential or not _bare(model) or _global_hooks():
        return False
    if _module._global_backward_hooks or _module._global_backward_pre_hooks:
        return False
    body = list(model)
    if body and type(body[0]) is nn.Flatten and _bare(body[0]):
        if (body[0].start_dim, body[0].end_dim) != (1, -1):
            return False
        body = body[1:]
    if len(body) % 2 == 0:  # Linear, then (activation, Linear) pairs
        return False
    for i, m in enumerate(body):
        ok = _plain_linear(m) and _no_backward_hooks(m) if i % 2 == 0 else _activation(m)
        if not ok:
            return False
    return all(p.is_floating_point() for p in model.parameters())


def _activation(m: nn.Module) -> bool:
    return type(m) in ACTIVATIONS and _bare(m)


class ReluChain:
    """A ReLU MLP's layers; :meth:`forward` records each ReLU's mask, :meth:`vjp` multiplies
    out v^T J for the recorded masks (module docstring)."""

    def __init__(self, model: nn.Sequential) -> None:
        self.model, self.layers = model, list(model)
        self.masks: list[torch.Tensor] = []

    @classmethod
    def of(cls, model: nn.Module, front) -> ReluChain | None:
        """The chain of ``model`` if it is a plain ReLU MLP taking float inputs, else None."""
        if getattr(front, "kind", None) != "plain" or getattr(front, "output", None):
            return None
        return cls(model) if _is_relu_mlp(model) else None

    def intact(self) -> bool:
        """Whether the model is still the plain ReLU MLP it was (checked before every step,
        a few attribute reads: a hook, a parametrization or a replaced layer added after the
        Trainer was built, mid-run, would change the model's Jacobian or output without
        changing the chain's products)."""
        return list(self.model) == self.layers and _is_relu_mlp(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output for x (the same modules called in the same order as
        ``nn.Sequential.forward``), each ReLU's mask z > 0 recorded."""
        self.masks = []
        h = x
        for layer in self.layers:
            if type(layer) is nn.ReLU:
                self.masks.append(h > 0)  # before the call: an in-place ReLU overwrites z
            h = layer(h)
        return h

    def vjp(self, v: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """v^T J (m, d) at the ``rows`` of the last forward batch (all when None) for
        v (m, C), differentiable in the weights (first order)."""
        g, k = v, len(self.masks)
        for layer in reversed(self.layers):
            if isinstance(layer, nn.Linear):
                g = g @ layer.weight  # (m, out) @ (out, in)
            elif type(layer) is nn.ReLU:
                k -= 1
                g = g * (self.masks[k] if rows is None else self.masks[k][rows])
        return g


def agrees(chain_est: torch.Tensor, generic_est: torch.Tensor, rtol: float = 1e-3) -> bool:
    """Whether the chain's per-sample estimates match the generic path's (float rounding of
    the summation order: ~1e-6 relative in float32; rtol leaves room for a mask flipped by a
    pre-activation within rounding of 0, ~1/width)."""
    a, b = chain_est.detach().double(), generic_est.detach().double()
    if a.shape != b.shape or not bool(torch.isfinite(a).all() and torch.isfinite(b).all()):
        return False
    return bool(((a - b).abs() <= rtol * torch.maximum(a.abs(), b.abs()) + 1e-30).all())
