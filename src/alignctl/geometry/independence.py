"""Samples must not interact: a check before any Jacobian is taken.

Every batched path of :mod:`.measure` rests on one fact: in eval mode the output of sample n
depends on x_n alone, so the gradient of sum_n <v_n, f(x_n)> with respect to the batch holds
each sample's own v_n^T J_n. A model that mixes samples in eval mode (``x - x.mean(0)``,
``F.batch_norm(..., training=True)``, a batch-size branch, attention across the batch) breaks
it: the products then add other samples' cross terms, and the values change with the chunk
size (on a batch-centred MLP, centroid_alignment of one sample was 0.379, -0.116 or 0.261 for
chunks of 20, 4 or 10 samples). Per-sample Jacobians are not defined for such a model, so it
is refused rather than measured.

The check, once per model object and sample shape (:data:`_PASSED`; again on later
measurements while the compared logits or gradients are the same for every sample: a zero
head at initialisation hides any coupling, and analyze loads every checkpoint into one
model object): the logits of the first
sample and of the first k // 2 of k = min(n, 8) samples, each run alone, against the same
samples' logits run among the k, within :data:`alignctl.geometry.verify.TOL` of the largest
|logit| in float64 and 1e-3 in float32 (the kernels of two batch sizes may round
differently; coupling moves logits by a large fraction of the largest). When they differ, the k
samples are run again: a model whose outputs change between two identical calls (random
draws in eval mode) is not batch-coupled; it gets a note instead, its metrics being those of
one draw. Two couplings that the first logits cannot show are checked too:

- through the gradient only (the batch mean entering as ``m - m.detach()``, a custom
  backward that mixes samples): :func:`check_gradients` makes the same comparison on one
  vector-Jacobian product with a fixed random cotangent, 1 and k // 2 samples against the
  k (k at most the chunk size: samples in chunks of one never meet);
- at the chunk size only (statistics of batches over 16 samples): :func:`check_chunk`
  compares the first chunk's logits, which the measurement computes anyway, with those of
  its first k samples run among the k, in a forward pass that records a graph as the chunk's
  does (without gradients, a frozen ``nn.TransformerEncoder`` takes a fast path that gives
  padded positions 0: other logits at every batch size, not coupling).

Cost: two or three forward passes and three backward passes of at most 8 samples, once per
model and sample shape, and one forward pass of 8 samples (with its graph) per
measurement.
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
    a, b = a.detach().double(), b.detach().double()
    scale = float(b.abs().max()) if b.numel() else 0.0
    diff = float((a - b).abs().max()) if b.numel() else 0.0
    return diff / scale if scale > 0 else diff


def _varies(t: torch.Tensor | None) -> bool:
    """Whether the rows of t (one per sample) differ: a model whose logits (or input
    gradients) are the same for every sample at these weights (a zero head, as torchvision's
    ViT is initialised, with or without a bias) shows no coupling, whatever it does."""
    if t is None or t.shape[0] < 2:
        return False
    t = t.detach().double()
    return bool((t - t[:1]).abs().max() > 0)


def _tolerance(dt: torch.dtype) -> float:
    # coupling moves logits by a large fraction of the largest (batch statistics, batch-size
    # branches); kernels chosen by batch size round apart by far less (a 13-conv BatchNorm
    # CNN and a 6-layer transformer encoder, 1 vs 8 samples: < 3e-7 of the largest logit).
    # A refusal stops the user's run: in float32 it takes 1e-3, a wide margin over rounding
    return TOL.get(dt, 1e-4) if dt == torch.float64 else max(TOL.get(dt, 1e-4), 1e-3)


def _coupled(j: int, k: int, err: float, what: str = "logits") -> InputError:
    return InputError(
        f"the model's outputs for a sample depend on the other samples of its batch "
        f"(the first {j} of {k} samples run alone change their {what} by {err:.2g} of "
        "the largest): batch statistics in eval mode (F.batch_norm(training=True), "
        "x - x.mean(0)) or a batch-size branch? Per-sample Jacobians are undefined for "
        "such a model; make its eval-mode forward act on each sample alone"
    )


def check_chunk(logits, xb: torch.Tensor, out: torch.Tensor, dt: torch.dtype) -> None:
    """InputError when the logits ``out`` of a chunk xb (more than k samples) differ from
    those of its first k samples run among the k (a branch or statistics that only batches
    of the chunk's size take). ``logits(xb)``: the (m, C) logits of raw inputs xb from a
    forward pass like the chunk's, one that records a graph: PyTorch's eval-mode fast paths
    without gradients (nested tensors in ``nn.TransformerEncoder``, which give padded
    positions 0) answer a frozen model differently at every batch size."""
    k = K
    if xb.shape[0] <= k or out is None or not bool(torch.isfinite(out[:k]).all()):
        return
    few = logits(xb[:k])
    if few.shape != out[:k].shape:
        return
    err = _error(few, out[:k])
    if err > _tolerance(dt) and _error(logits(xb[:k]), few) <= _tolerance(dt):
        raise _coupled(k, xb.shape[0], err)


def _vjp_error(grads, x: torch.Tensor, k: int, whole: torch.Tensor, dt) -> tuple | None:
    """(j, error) for the first j samples whose vector-Jacobian product run alone differs
    from theirs among the k, else None, and whether the products could show it (not all
    alike: :func:`_varies`); ``grads(xb, v)`` as for :func:`check_gradients`."""
    gen = torch.Generator().manual_seed(0)  # not the global RNG: measuring draws nothing
    v = torch.randn(whole.shape, generator=gen, dtype=torch.float64)
    try:
        among = grads(x[:k], v)
    except Exception:  # the measurement's own products name the problem
        return None, False
    for j in sorted({1, k // 2}):
        try:
            alone = grads(x[:j], v[:j])
        except Exception:
            continue
        if alone is None or among is None or not bool(torch.isfinite(alone).all()):
            continue
        err = _error(alone, among[:j])
        if err > _tolerance(dt) and _error(grads(x[:j], v[:j]), alone) <= _tolerance(dt):
            return (j, err), True
    return None, _varies(among) and bool(torch.isfinite(among).all())


def check_gradients(model, logits, grads, x: torch.Tensor, dt: torch.dtype, size: int) -> None:
    """InputError when the vector-Jacobian products of the first samples change with the
    other samples of their batch, among k = min(n, 8, ``size``) (a chunk of ``size``
    samples couples no more; one differentiated pass of k samples stays in the budget);
    once per model, sample shape and k. ``logits`` as for :func:`check_independent`;
    ``grads(xb, v)``: the (m, d) gradient of sum(v * logits) at the differentiated tensor
    of xb (v: (m, C) float64), or None when there is none."""
    k = min(x.shape[0], K, size)
    key = (tuple(x.shape[1:]), x.dtype, dt, "gradients", k)
    if k < 2 or key in _PASSED.get(model, set()):
        return
    with torch.no_grad():
        try:
            whole = logits(x[:k])
        except Exception:  # the measurement's own first forward pass names the problem
            return
    if not bool(torch.isfinite(whole).all()):
        return
    found, seen = _vjp_error(grads, x, k, whole, dt)
    if found is not None:
        j, err = found
        raise _coupled(j, k, err, "gradients")
    if seen:  # else nothing could show at these weights: checked again next measurement
        _PASSED.setdefault(model, set()).add(key)


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
    tol = _tolerance(dt)
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
            raise _coupled(j, k, err)
    if _varies(whole):  # else nothing could show at these weights: checked again next time
        _PASSED.setdefault(model, set()).add(key)
    return None
