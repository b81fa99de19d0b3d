"""Randomized estimates of the whole-Jacobian metrics from K products per sample (many classes).

The exact whole-Jacobian metrics cost C vector-Jacobian products (VJPs) per batch. Above
:data:`MIN_CLASSES` classes (or when asked: ``measure(..., sketch=K)``, ``--sketch K``) the
spectrum metrics are estimated from a few products with the Jacobian A of each sample (J, or
J_h R_w^T with the same singular values for the linear-input shortcut):

- the top singular values by the randomized range finder (Halko, Martinsson & Tropp, SIAM
  Review 53(2), 2011, Algorithms 4.3/4.4 and 5.1) in its block Krylov form (Musco & Musco,
  NeurIPS 2015): Y = A^T Omega (K VJPs, Omega Gaussian C x K), then ``q`` =
  :data:`POWER_ITERATIONS` more blocks (A^T A)^i Y, Q an orthonormal basis of all of them and
  B = A Q ((q + 1) K JVPs, (q + 1) K VJPs in all); the singular values of B are Ritz values,
  each a lower bound of the same singular value of A (sigma_i(A Q) <= sigma_i(A), |Q|_2 = 1);
- |A|_F^2 by Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021): |A Q|_F^2 exactly, plus a
  Hutchinson (Rademacher) estimate of the rest, |A (I - QQ^T) g|^2 averaged over
  ``K`` Rademacher probes g (K JVPs): unbiased given Q, with its standard error estimated from
  the sample variance of the K terms. A Jacobian of rank <= K is then measured exactly up to
  rounding; a flat spectrum keeps Hutchinson's variance 2 |A (I - QQ^T)|_F^4 / (K r) or less;
- JVPs are double VJPs: g(u) = u^T A is linear in u, and A v = d<g(u), v>/du.

What stays exact at any C (one product each): the centroid mu = J^T 1 and the label row J_y
(VJPs), the centred label row (v = e_y - 1/C), J x (one JVP), hence |J x_hat|^2, the
numerator of ``jacobian_alignment_full``. Its denominator |J|_F^2 is not: a trace of a matrix
of rank r is not determined by fewer than r products in general, so it is estimated.

Random numbers come from a generator seeded with ``seed`` (default 0) per measurement and drawn
chunk after chunk: sketched values depend on the seed and the batch size, within their errors.
"""

from __future__ import annotations

import math

import torch

from alignctl.geometry.products import Operator

__all__ = ["Operator", "Sketch", "erank", "norm", "pc1", "ratio_error", "resolve"]

MIN_CLASSES = 256  # above this many classes the spectrum metrics are sketched by default
DEFAULT_K = 16  # products per block (VJPs and JVPs) when sketching by default
POWER_ITERATIONS = 2  # extra Krylov blocks


def resolve(sketch: int | None, n_classes: int) -> int | None:
    """K for this measurement, or None for the exact path. ``sketch``: None (sketch with
    :data:`DEFAULT_K` above :data:`MIN_CLASSES` classes), 0 (never) or K >= 1 (always)."""
    if sketch is None:
        return DEFAULT_K if n_classes > MIN_CLASSES else None
    if isinstance(sketch, bool) or int(sketch) != sketch or sketch < 0:
        from alignctl.errors import InputError

        raise InputError(f"sketch must be 0 (exact) or a number of probes K >= 1, not {sketch!r}")
    return int(sketch) or None


def op_width(op: Operator) -> int:
    """s, the width of A (the flattened leaf, or the columns of ``right``)."""
    return op.leaf[0].numel() if op.right is None else op.right.shape[1]


def _krylov(op: Operator, omega: torch.Tensor, rank: int):
    """(Q (n, s, m), B = A Q (n, C, m)): an orthonormal basis of the block Krylov space
    [A^T Omega, (A^T A) A^T Omega, ...] of ``POWER_ITERATIONS`` + 1 blocks (fewer once they
    reach ``rank`` >= rank(A)), and A times it (Musco & Musco, NeurIPS 2015: Rayleigh-Ritz on
    the whole space converges faster than subspace iteration for the same products)."""
    q = _orth(op.vjp(omega).transpose(1, 2))
    qs, bs = [q], [op.jvp(q)]
    for _ in range(POWER_ITERATIONS):
        k = q.shape[2]
        if sum(b.shape[2] for b in qs) + k > rank:
            break
        y = op.vjp(_orth(bs[-1])).transpose(1, 2)  # A^T A q, (n, s, K)
        basis = torch.cat(qs, 2)
        # the new block from a Householder QR of [basis, y]: orthonormal to the basis even when
        # y lies (numerically) in its span, as it does once the space holds J's numerical rank
        # (Gram-Schmidt on y then a QR of the remainder normalised rounding noise that was not
        # orthogonal to the basis: |AQ|_F exceeded |J|_F by 12% on a tiny ViT)
        q = _orth(torch.cat([basis, y], 2))[:, :, basis.shape[2] :]
        qs.append(q)
        bs.append(op.jvp(q))
    return torch.cat(qs, 2), torch.cat(bs, 2)


def _orth(y: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns spanning y (n, m, K) (reduced QR)."""
    return torch.linalg.qr(y, mode="reduced")[0]


def _centre(b: torch.Tensor) -> torch.Tensor:
    """(I - 11^T / C) b over the class dimension 1 (nothing to centre for C = 1)."""
    return b if b.shape[1] == 1 else b - b.mean(dim=1, keepdim=True)


def _sum_squares(t: torch.Tensor, dims) -> torch.Tensor:
    """Sum of squares over ``dims`` as float64. Summed in t's dtype (pairwise), whose rounding,
    about log2(count) u relative, stays under the rounding term of the standard errors below;
    a float64 copy of t would cost more than the products' own noise justifies."""
    return (t * t).sum(dims).double()


def _hutchpp(b2: torch.Tensor, r: torch.Tensor, s: int, c: int, dt) -> tuple[torch.Tensor, ...]:
    """(|B|_F^2 + mean_k |R_k|^2, its standard error), float64, (n,) each, then
    the Hutchinson part alone (the energy outside Q) and its standard error; ``b2`` is |B|_F^2.
    The standard error is the Hutchinson terms' sample standard deviation over sqrt(K), at
    least the rounding of the products, sqrt(C + s) u |A|_F^2 (u: the unit roundoff of their
    dtype; a Jacobian captured whole by Q has no sampling error left, only that)."""
    terms = _sum_squares(r, 1)  # (n, K)
    k = terms.shape[1]
    se = terms.std(dim=1, unbiased=True) / math.sqrt(k) if k > 1 else terms[:, 0] * math.inf
    est = b2 + terms.mean(1)
    rounding = (c + s) ** 0.5 * torch.finfo(dt).eps / 2 * est.abs()
    return est, torch.maximum(se, rounding), terms.mean(1), se


def _ritz(b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(singular values (n, m) descending, right singular vectors (n, m, m) as columns,
    |B|_F^2, B in float64) of B (n, C, m) from the float64 Gram B^T B and its
    eigendecomposition: C m^2 products instead of an SVD of the tall C x m matrix (3x cheaper
    in all at C = 1000, benchmarks/large_c.py). The Gram's eigenvalues are exact to about
    m eps_64 |B|_2^2, so a singular value is exact to sqrt(m eps_64) sigma_1 ~ 1e-7 sigma_1
    absolute, under the floor sqrt(C + s) u_32 sigma_1 below which float32 products are noise
    anyway (``Sketch.sv_floor``)."""
    bd = b.double()
    gram = bd.transpose(1, 2) @ bd  # (n, m, m)
    evals, evecs = torch.linalg.eigh(gram)
    sv = evals.flip(-1).clamp_min(0).sqrt()
    return sv, evecs.flip(-1), gram.diagonal(dim1=1, dim2=2).sum(-1), bd


class Sketch:
    """The sketched spectrum of every sample of a chunk: Ritz values ``sv`` (n, K), |A|_F^2
    and its standard error for A and for the centred (I - 11^T / C) A, the residual of the top
    Ritz pair, and ``rank_bound`` = min(C, s)."""

    def __init__(self, op: Operator, n_classes: int, k: int, generator: torch.Generator):
        out = op.out
        n, c, dt = out.shape[0], n_classes, out.dtype
        omega = torch.randn(n, c, k, generator=generator, device=out.device).to(dt)
        q, b = _krylov(op, omega, min(c, op_width(op)))
        s = q.shape[1]
        g = torch.randint(0, 2, (n, s, k), generator=generator, device=out.device).to(dt) * 2 - 1
        g = g - q @ (q.transpose(1, 2) @ g)  # deflated probes: Hutch++
        r = op.jvp(g)
        sv, vb, b2, bd = _ritz(b)
        self.fro2, self.fro2_se, self.tail, self.tail_se = _hutchpp(b2, r, s, c, dt)
        cb = _centre(b)
        self.cfro2, self.cfro2_se, _, _ = _hutchpp(_sum_squares(cb, (1, 2)), _centre(r), s, c, dt)
        self.sv, self.rank_bound = sv, min(c, s)
        # singular values under this are rounding noise of the float products: 0
        self.sv_floor = (c + s) ** 0.5 * torch.finfo(dt).eps / 2 * sv[:, :1]
        # residual of the top Ritz pair (u1 = B vb1 / sigma_1, v1 = Q vb1): A^T u1 - sigma_1 v1
        vb1 = vb[:, :, :1]  # (n, m, 1)
        u1 = (bd @ vb1).squeeze(-1) / sv[:, :1].clamp_min(1e-300)  # (n, C)
        top = op.vjp(u1.unsqueeze(-1).to(dt))[:, 0].double()  # (n, s), one VJP
        v1 = (q.double() @ vb1).squeeze(-1)
        self.residual = torch.where(sv[:, 0] > 0, (top - sv[:, :1] * v1).norm(dim=1), 0)


def norm(sk: Sketch, centred: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(sqrt of the Hutch++ estimate of |J|_F^2 (or |J_c|_F^2), its standard error by the
    delta method, se(|J|_F^2) / (2 |J|_F)), float64 (n,) in units of the J scale."""
    fro2, se = (sk.cfro2, sk.cfro2_se) if centred else (sk.fro2, sk.fro2_se)
    value = fro2.clamp_min(0).sqrt()
    return value, torch.where(value > 0, se / (2 * value.clamp_min(1e-300)), se.sqrt())


def ratio_error(num: torch.Tensor, sk: Sketch, centred: bool = False):
    """(num / |J|_F^2, its standard error num se(|J|_F^2) / |J|_F^4): an exact numerator
    (|J x_hat|^2) over the Hutch++ denominator; 0 where the estimate is <= 0."""
    fro2, se = (sk.cfro2, sk.cfro2_se) if centred else (sk.fro2, sk.fro2_se)
    ok = fro2 > 0
    value = torch.where(ok, num / fro2.where(ok, 1), 0).clamp(0, 1)
    return value, torch.where(ok, value * se / fro2.where(ok, 1), 0)


def pc1(sk: Sketch) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma_1^2 / |J|_F^2 with sigma_1 the top Ritz value and the Hutch++ denominator, in
    [0, 1]; error: the denominator's standard error (delta method) plus the first-order bound
    2 sigma_1 |r| / |J|_F^2 from the top Ritz pair's residual r)."""
    s1 = sk.sv[:, 0]
    value, se = ratio_error(s1.pow(2), sk)
    ok = sk.fro2 > 0
    bound = torch.where(ok, 2 * s1 * sk.residual / sk.fro2.where(ok, 1), 0)
    return value, se + bound


def _entropy_rank(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """exp(-sum_i p_i log p_i), p_i = sigma_i / sum sigma, over groups (values (n, m), counts
    (n, m)) of repeated singular values."""
    total = sum((v * c).sum(1) for v, c in parts)
    safe = torch.where(total > 0, total, 1).unsqueeze(1)
    h = 0
    for v, c in parts:
        p = v / safe
        h = h - (c * p * torch.where(p > 0, p.log(), 0)).sum(1)
    return torch.where(total > 0, torch.exp(h), 0)


def erank(sk: Sketch) -> tuple[torch.Tensor, torch.Tensor]:
    """Effective rank (Roy & Vetterli) when only the top K singular values are known.

    The tail's energy E = |J|_F^2 - sum_{i<=K} sigma_i^2 (the Hutchinson part of Hutch++) is
    known, not how it splits: the value is the midpoint, the error the half-width, of the
    effective ranks of the two extreme completions: E concentrated (as many singular values
    sigma_1 as it holds, then the remainder) and E spread evenly over the min(C, s) - K
    remaining directions, with E taken two standard errors above (spread) and below
    (concentrated) its estimate. When E is 0 (rank <= K) both agree: the exact value, with
    the rounding of the float products, sqrt(min(C, s) (C + s)) u, relative, as its error."""
    sv, k = sk.sv, sk.sv.shape[1]
    # |B|_F^2 = sum sigma_i(B)^2: the tail is the Hutchinson part, no difference is taken
    hi = (sk.tail + 2 * sk.tail_se).clamp_min(0)
    lo = (sk.tail - 2 * sk.tail_se).clamp_min(0)
    m = max(sk.rank_bound - k, 0)
    one = torch.ones_like(sv[:, :1])
    top = (sv, torch.ones_like(sv))
    if m == 0:
        value = _entropy_rank([top])
        return value, torch.zeros_like(value)
    even = (hi / m).sqrt().unsqueeze(1)
    even = torch.where(even > sk.sv_floor, even, 0)
    spread = _entropy_rank([top, (even, one * m)])
    last = sv[:, :1]  # no tail value exceeds sigma_1 (Ritz values of the tail are not bounds)
    full = torch.where(last > 0, lo.unsqueeze(1) / last.pow(2).clamp_min(1e-300), 0).floor()
    full = full.clamp(max=m)
    rem = (lo.unsqueeze(1) - full * last.pow(2)).clamp_min(0).sqrt()
    rem = torch.where(full < m, rem, 0)
    conc = _entropy_rank([top, (last.expand_as(full), full), (rem, one)])
    value = (spread + conc) / 2
    rounding = value * sk.sv_floor[:, 0] / sv[:, 0].clamp_min(1e-300) * (sk.rank_bound**0.5)
    return value, (spread - conc).abs() / 2 + rounding
