"""Jacobians that underflowed float32: measured again in float64, sample by sample.

Weights of 1e-15 over four layers give J ~ 1e-60, far below float32's smallest number
(2^-149): the float32 backward passes return J = 0 (or a few subnormal digits), and every
scale-free metric of a finite, non-zero network read 0 (cosines, PC1, effective rank), a
wrong number. :mod:`alignctl.geometry.metrics.quantities` rescales what it is given by powers
of two, which cannot bring back digits that were never computed.

A sample is suspect when the largest |entry| of what its metrics are computed from (J, J_h of
the linear-input shortcut, the centroid mu or the label row J_y) is below :data:`TINY`
(2^-100, where float32 products start to lose digits to underflow) or 0. Those samples only
are measured again in float64 by :func:`alignctl.measure`; a Jacobian that is exactly 0 in
float64 as well (dead ReLU units) keeps its values, so the check never changes a right one.
"""

from __future__ import annotations

import torch

TINY = 2.0**-100


def tiny_samples(q) -> torch.Tensor:
    """(n,) bool: the samples of a :class:`~alignctl.geometry.metrics.Quantities` whose
    derivative's largest |entry| is below :data:`TINY` (or 0); all False for the sketch and
    for metrics that take no derivative."""
    n = q.x.shape[0]
    for t in (q.jac, q.jh, q._mu, q._jy):
        if t is not None and t.numel():
            return t.detach().abs().reshape(n, -1).amax(1).lt(TINY).cpu()
    return torch.zeros(n, dtype=torch.bool)


def splice(values: dict, idx: torch.Tensor, again: dict) -> dict:
    """``values`` with the samples ``idx`` replaced by ``again``'s (float64); a tensor is
    promoted to float64 when a replacement is not a float32 number (|v| below its range)."""
    out = {}
    for name, v in values.items():
        new = again[name].to(v.device)
        lost = (new != 0) & (new.to(v.dtype) == 0)  # representable in float64 only
        v = v.double() if bool(lost.any()) else v.clone()
        v[idx] = new.to(v.dtype)
        out[name] = v
    return out
