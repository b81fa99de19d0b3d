"""Samples must not interact: a check before any Jacobian is taken.

Every batched path of :mod:`.measure` rests on one fact: in eval mode the output of sample n
depends on x_n alone, so the gradient of sum_n <v_n, f(x_n)> with respect to the batch holds
each sample's own v_n^T J_n. A model that mixes samples in eval mode (``x - x.mean(0)``,
``F.batch_norm(..., training=True)``, a batch-size branch, attention across the batch) breaks
it: the products then add other samples' cross terms, and the values change with the chunk
size (on a batch-centred MLP, centroid_alignment of one sample was 0.379, -0.116 or 0.261 for
chunks of 20, 4 or 10 samples). Per-sample Jacobians are not defined for such a model, so it
is refused rather than measured.

The check, once per model object and sample shape (:data:`_PASSED`): the logits of the first
sample and of the first k // 2 of k = min(n, 8) samples, each run alone, against the same
samples' logits run among the k, within :data:`alignctl.geometry.verify.TOL` of the largest
|logit| in float64 and 1e-3 in float32 (the kernels of two batch sizes may round
differently; coupling moves logits by a large fraction of the largest). When they differ, the k
samples are run again: a model whose outputs change between two identical calls (random
draws in eval mode) is not batch-coupled; it gets a note instead, its metrics being those of
one draw. Cost: two or three forward passes of at most 8 samples, without gradients.
"""

from __future__ import annotations

import weakref

import torch

from alignctl.errors import InputError
from alignctl.geometry.verify import TOL

K = 8
_PASSED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {key}

RANDOM = (
    "the model's outputs differ between two identical calls in eval mode (random draws in "
    "forward?): its metrics are those of one draw"
)


def _error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, in float64 (0 when both are 0)."""
    a, b = a.double(), b.double()
    scale = float(b.abs().max()) if b.numel() else 0.0
    diff = float((a - b).abs().max()) if b.numel() else 0.0
    return diff / scale if scale > 0 else diff


def check_independent(model, logits, x: torch.Tensor, dt: torch.dtype) -> str | None:
    """InputError when the outputs of some samples change with the other samples of their
    batch; a note (:data:`RANDOM`) when they change between identical calls; else None.

    ``logits(xb)``: the (m, C) logits of raw inputs xb, as the measurement computes them.
    """
    n = x.shape[0]
    key = (tuple(x.shape[1:]), x.dtype, dt)
    if n < 2 or key in _PASSED.get(model, set()):
        return None
    k = min(n, K)
    # coupling moves logits by a large fraction of the largest (batch statistics, batch-size
    # branches); kernels chosen by batch size round apart by far less (a 13-conv BatchNorm
    # CNN and a 6-layer transformer encoder, 1 vs 8 samples: < 3e-7 of the largest logit).
    # A refusal stops the user's run: in float32 it takes 1e-3, a wide margin over rounding
    tol = TOL.get(dt, 1e-4) if dt == torch.float64 else max(TOL.get(dt, 1e-4), 1e-3)
    with torch.no_grad():
        try:
            whole = logits(x[:k])
        except Exception:  # the measurement's own first forward pass names the problem
            return None
        if not bool(torch.isfinite(whole).all()):
            return None  # overflow: the measurement's own checks report it
        for j in sorted({1, k // 2}):  # one sample alone (a batch-size branch), half of them
            try:
                alone = logits(x[:j])
            except Exception:  # fewer samples do not run (one sample through a batch norm)
                continue
            if alone.shape[1:] != whole.shape[1:] or not bool(torch.isfinite(alone).all()):
                continue
            err = _error(alone, whole[:j])
            if err <= tol:
                continue
            if _error(logits(x[:k])[:j], whole[:j]) > tol:
                return RANDOM
            raise InputError(
                f"the model's outputs for a sample depend on the other samples of its batch "
                f"(the first {j} of {k} samples run alone change their logits by {err:.2g} of "
                "the largest): batch statistics in eval mode (F.batch_norm(training=True), "
                "x - x.mean(0)) or a batch-size branch? Per-sample Jacobians are undefined for "
                "such a model; make its eval-mode forward act on each sample alone"
            )
    _PASSED.setdefault(model, set()).add(key)
    return None
