"""Singular values of batched Jacobians, fast and accurate for near rank-deficient J.

The float32 Gram matrix G = J J^T (or J^T J) carries rounding errors of ~sqrt(d) eps32
sigma_1^2 in its eigenvalues: harmless for large eigenvalues, not for small ones (a singular
value sigma_i comes out with an error of ~sqrt(sqrt(d) eps32) sigma_1 ~ 1e-3 sigma_1). Samples
whose smallest Gram eigenvalue is under 1e-2 of the largest (near rank-deficient J: what
training converges to and what GrokAlign produces) therefore take a path that never squares J:

1. a factor M with the singular values of J and at most min(C, k) columns: J itself, or for
   J = J_h W (the linear-input shortcut) M = J_h R_w^T with W^T = Q_w R_w (a float32
   Householder QR of W^T, once per batch): J = M Q_w^T and Q_w has orthonormal columns;
2. R from a float32 Householder QR of M's tall orientation (M^T when C is the short side),
   then the float32 singular values of the small square R (Golub & Van Loan, Matrix
   Computations, 4th ed., 5.4.1 and 8.6: both steps are backward stable).

A backward-stable float32 algorithm returns the exact singular values of M + E with
|E|_2 <= c u |M|_F (u = 2^-24), so every sigma_i is within that of the true one (Weyl).
:func:`stable_singular_values` uses c = sqrt(max dimension of M) (the typical growth of
rounding errors in dot products and Householder updates; Higham, Accuracy and Stability of
Numerical Algorithms, 2nd ed., 3.5 and 19.3) and returns that bound per sample; samples whose
bound exceeds :data:`BOUND_TOL` sigma_1 are recomputed in float64 (only those samples).
Singular values under the bound cannot be told from 0 and are set to 0. That is harmless for
PC1 but not for the effective rank: p log p has an unbounded slope at 0, so a tail of many
singular values near the bound (a rank-r layer plus a tail of 1e-6 sigma_1, C = 200: erank off
by 1e-3) moves it far more than sigma_i / sigma_1 moves. :func:`erank_error` bounds that from
the tail's energy, taken in float64 as |M - M V_r V_r^T|_F^2 (V_r the kept right singular
vectors), and samples over :data:`BOUND_TOL` go to float64 too.
"""

from __future__ import annotations

import torch

BOUND_TOL = 2.5e-5  # of sigma_1: a quarter of the 1e-4 the spectrum metrics are checked to
RISKY = 1e-2  # Gram eigenvalue ratio under which the Gram path is not accurate enough


def weight_factor(w: torch.Tensor) -> torch.Tensor:
    """R_w^T (k, min(k, d)) with W^T = Q_w R_w, so that J_h W and J_h R_w^T have the same
    singular values; W: (k, d)."""
    return torch.linalg.qr(w.transpose(0, 1), mode="r")[1].transpose(0, 1)


def _tall_r(m: torch.Tensor) -> torch.Tensor:
    """The square R of a QR of M's tall orientation, (n, s, s) with s = min of M's dims."""
    tall = m if m.shape[1] >= m.shape[2] else m.transpose(1, 2)
    return torch.linalg.qr(tall, mode="r")[1]


def stable_singular_values(m: torch.Tensor, vectors: bool = False):
    """(singular values of every M in float64, descending, (n, min(C, k)); their error bound
    sqrt(max(C, k)) u |M|_F per sample, (n,)), from the float32 QR + SVD of the module
    docstring. M: (n, C, k), finite. ``vectors``: also the right singular vectors of M's
    tall orientation, (n, s, s) with rows the vectors (V^T)."""
    r = _tall_r(m)
    if vectors:
        _, sv, vh = torch.linalg.svd(r)
    else:
        sv, vh = torch.linalg.svdvals(r), None
    u = torch.finfo(m.dtype).eps / 2
    bound = max(m.shape[1], m.shape[2]) ** 0.5 * u * m.double().flatten(1).norm(dim=1)
    return (sv.double(), bound, vh) if vectors else (sv.double(), bound)


def erank_error(m: torch.Tensor, sv: torch.Tensor, bound: torch.Tensor, vh: torch.Tensor):
    """A first-order bound (n,) on the relative error of the effective rank exp(H) from the
    kept singular values ``sv`` (those over ``bound``, the rest 0): each kept sigma_i is
    within b (``bound``) and moves H by at most (b / S) (|log p_i| + 1 + H) (dH/dsigma_i =
    -(log p_i + H) / S, S = sum sigma); the t dropped ones, holding the energy
    T = |M - M V_r V_r^T|_F^2 (float64; V_r the kept rows of ``vh``), add at most what T spread
    evenly over them adds: t h(sqrt(T / t) / S) + sqrt(t T) (1 + H) / S, h(p) = -p log p.

    T is taken as trace(P G P), P = I - V_r V_r^T, G = M_tall^T M_tall (s x s, float64): the
    same projection, but one well-shaped product over the long side instead of two with an
    inner dimension of s (5x faster at C = 10, d = 256); P keeps the projection form, so V_r's
    float32 loss of orthogonality (1e-7) costs T only 1e-14 |M|_F^2, not 1e-7 |M|_F^2."""
    md = m.double()
    gram = md @ md.transpose(1, 2) if m.shape[1] < m.shape[2] else md.transpose(1, 2) @ md
    kept = (sv > bound[:, None]).double()  # (n, s), a leading run (descending)
    v = vh.double() * kept[:, :, None]  # the kept rows only
    proj = torch.eye(v.shape[-1], dtype=v.dtype) - v.transpose(1, 2) @ v  # (n, s, s)
    # trace(P G P) for symmetric P; >= 0 in exact arithmetic, rounding may leave -1e-16 |M|^2
    tail = ((proj @ gram) * proj).flatten(1).sum(1).clamp_min(0)
    total = (sv * kept).sum(1)
    safe = torch.where(total > 0, total, 1)
    p = sv * kept / safe[:, None]
    logp = torch.where(p > 0, p.log(), 0)
    h = -(p * logp).sum(1)
    first = (bound / safe)[:, None] * (logp.abs() + 1 + h[:, None]) * kept
    t = (1 - kept).sum(1) + max(min(m.shape[1], m.shape[2]) - sv.shape[1], 0)
    t = t.clamp_min(1)
    q = (tail / t).sqrt() / safe
    dropped = t * q * torch.where(q > 0, -q.clamp_min(1e-300).log(), 0)
    dropped = dropped + (t * tail).sqrt() / safe * (1 + h)
    return torch.where(total > 0, first.sum(1) + dropped, 0)


def from_gram(gram: torch.Tensor, factor, exact: bool = False) -> torch.Tensor:
    """Singular values (n, k) of the J whose float32 Gram matrix is ``gram`` (n, k, k),
    descending, in float64; NaN rows for samples whose Gram matrix is not finite.

    ``factor(idx)`` gives the float32 factor M of those samples (module docstring) or, called
    as ``factor(idx, exact=True)``, float64 J. ``exact``: every sample from float64 J (what
    :mod:`alignctl.geometry.verify` asks for when a check failed)."""
    gram64 = gram.double()
    ok = torch.isfinite(gram64).flatten(1).all(1)
    gram64 = torch.where(ok[:, None, None], gram64, 0)
    k = gram.shape[1]
    sv = torch.zeros(gram.shape[:2], dtype=torch.float64, device=gram.device)
    if exact:
        slow = ok.nonzero().squeeze(-1)
    else:
        eig = torch.linalg.eigvalsh(gram64)  # (n, k) ascending
        sv = eig.flip(-1).clamp_min(0).sqrt()
        risky = (ok & (eig[:, 0] < RISKY * eig[:, -1])).nonzero().squeeze(-1)
        slow = risky[:0]
        if risky.numel():
            m = factor(risky)
            got, bound, vh = stable_singular_values(m, vectors=True)
            s = got.shape[1]
            far = erank_error(m, got, bound, vh) > BOUND_TOL  # a tail erank cannot drop
            got = torch.where(got > bound[:, None], got, 0)
            sv[risky] = torch.nn.functional.pad(got, (0, k - s)) if s < k else got[:, :k]
            slow = risky[(bound > BOUND_TOL * got[:, 0]) | far]
    for idx in slow.split(64):  # small float64 copies: big ones cost page faults
        j = factor(idx, exact=True)  # (m, C, d)
        s = torch.linalg.svdvals(j)
        sv[idx] = torch.nn.functional.pad(s, (0, k - s.shape[1])) if s.shape[1] < k else s
    floor = sv[:, :1] * (k * torch.finfo(torch.float64).eps) ** 0.5
    sv = torch.where(sv > floor, sv, torch.zeros_like(sv))
    return torch.where(ok[:, None], sv, torch.nan)
