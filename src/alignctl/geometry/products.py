"""Batched products with the per-sample Jacobians of a chunk: what the sketch is built from.

An :class:`Operator` holds one forward pass (``out`` computed from ``leaf``) and gives
vector-Jacobian products (VJPs, one backward pass each) and Jacobian-vector products (JVPs, by
the double-VJP trick: g(u) = u^T J is linear in u, and J t = d<g(u), t>/du), K at a time.
Source: the double-VJP trick is the standard one (e.g. J. Townsend, "A new trick for
calculating Jacobian vector products", 2017); batching by ``is_grads_batched`` is
``torch.autograd.grad``'s vmap over cotangents.
"""

from __future__ import annotations

import torch

from alignctl.geometry.vjp import no_path_error


def _has_convolution(out: torch.Tensor) -> bool:
    """Whether the autograd graph of ``out`` runs through a convolution."""
    seen, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if "Convolution" in type(node).__name__:
            return True
        stack.extend(n for n, _ in node.next_functions)
    return False


class Operator:
    """Products with the per-sample Jacobians A (n, C, s) of a chunk: ``out`` (n, C) computed
    from ``leaf``; ``right`` (k, s): A = J_leaf right (None: A = J_leaf, flattened)."""

    def __init__(self, out: torch.Tensor, leaf: torch.Tensor, right: torch.Tensor | None = None,
                 *, batched: bool = True):  # fmt: skip
        self.out, self.leaf, self.right = out, leaf, right
        self._u = None
        self._g = None
        # K products in one autograd call (until that fails once) when the caller's memory
        # budget allows K activation gradients at once (geometry/plan.py), except through
        # convolutions: vmap over their backward is 2x slower than K calls on the CPU
        # (benchmarks/large_c.py's CNN), 1.3x faster for linear layers (its MLP)
        self.batched = batched and not _has_convolution(out)

    def _grads(self, outputs, inputs, cots: torch.Tensor) -> torch.Tensor:
        """d<outputs, cot_i>/d inputs for the K cotangents ``cots`` (K, ...), as (K, ...).

        One call with ``is_grads_batched`` (vmap over the cotangents: one matrix-matrix
        product per layer instead of K matrix-vector ones, 1.3x faster on the MLP benchmark);
        a model with an operation vmap cannot batch (a custom autograd Function, say), or with
        a convolution, takes K calls, which give the same products up to summation order."""
        if not outputs.requires_grad:  # no graph at all: an input error, not a torch one
            raise no_path_error()
        if self.batched:
            try:
                (g,) = torch.autograd.grad(outputs, inputs, cots, retain_graph=True,
                                           is_grads_batched=True, allow_unused=True)  # fmt: skip
            except RuntimeError:
                self.batched = False
            else:
                if g is None:
                    raise no_path_error()
                return g
        rows = [torch.autograd.grad(outputs, inputs, c, retain_graph=True, allow_unused=True)[0]
                for c in cots]  # fmt: skip
        if any(g is None for g in rows):  # the output does not depend on the input
            raise no_path_error()
        return torch.stack(rows)

    def vjp_leaf(self, u: torch.Tensor) -> torch.Tensor:
        """u^T J_leaf for one cotangent per sample, u (n, C) -> (n, k)."""
        (g,) = torch.autograd.grad(self.out, self.leaf, u, retain_graph=True)
        return g.reshape(g.shape[0], -1)

    def jvp_leaf(self, t: torch.Tensor) -> torch.Tensor:
        """J_leaf t for one tangent per sample, t (n, k) -> (n, C)."""
        return self.jvp_raw(t.reshape(t.shape[0], -1, 1))[:, :, 0]

    def vjp_rows(self, u: torch.Tensor) -> torch.Tensor:
        """U^T J_leaf: u (n, C, K) -> (n, K, k), the leaf flattened."""
        g = self._grads(self.out, self.leaf, u.permute(2, 0, 1).contiguous())  # (K, n, ...)
        return g.reshape(g.shape[0], g.shape[1], -1).transpose(0, 1)

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """U^T A: u (n, C, K) -> (n, K, s)."""
        rows = self.vjp_rows(u)
        return rows if self.right is None else rows @ self.right

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """A V: v (n, s, K) -> (n, C, K), by the double-VJP trick: g(u) = u^T J_leaf is linear
        in u, and J_leaf t = d<g(u), t>/du."""
        if self.right is not None:
            v = self.right.to(v.dtype) @ v  # (k, s) @ (n, s, K)
        return self.jvp_raw(v)

    def jvp_raw(self, v: torch.Tensor) -> torch.Tensor:
        """J_leaf V: v (n, k, K) (the leaf flattened) -> (n, C, K)."""
        if self._g is None:
            self._u = torch.zeros_like(self.out, requires_grad=True)
            (self._g,) = torch.autograd.grad(self.out, self.leaf, self._u, create_graph=True)
        t = v.permute(2, 0, 1).reshape(v.shape[2], *self._g.shape)  # (K, n, ...)
        return self._grads(self._g, self._u, t.contiguous()).permute(1, 2, 0)  # (n, C, K)
