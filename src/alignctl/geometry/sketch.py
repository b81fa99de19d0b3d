"""Randomized estimates of the whole-Jacobian metrics from K products per sample (many classes).

The exact whole-Jacobian metrics cost C vector-Jacobian products (VJPs) per batch. Above
:data:`MIN_CLASSES` classes (or when asked: ``measure(..., sketch=K)``, ``--sketch K``) the
spectrum metrics are estimated from a few products with the Jacobian A of each sample (J, or
J_h R_w^T with the same singular values for the linear-input shortcut):

- the top singular values by the randomized range finder (Halko, Martinsson & Tropp, SIAM
  Review 53(2), 2011, Algorithms 4.3/4.4 and 5.1) in its block Krylov form (Musco & Musco,
  NeurIPS 2015), grown block by block (K VJPs + K JVPs each) until the top Ritz value is
  certified by the Kato-Temple residual bound (:mod:`.krylov`); Ritz values are lower bounds;
- |A|_F^2 by Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021): |A Q|_F^2 exactly, plus a
  Hutchinson (Rademacher) estimate of the rest from VJPs, added max(K, 16) at a time until its 95%
  half-width is small enough (:mod:`.hutchpp`), and that of |(I - 11^T / C) A|_F^2 too when
  a centred metric is asked for (rows nearly alike leave J_c almost all outside Q);
- the effective rank from the top K values and the tail energy: :mod:`.sketch_erank`;
- a Jacobian of rank < K is captured by the first block and measured exactly up to rounding,
  with K VJPs + K JVPs and no probe (trained networks' Jacobians often are: a rank-r last
  layer bounds rank(J) by r);
- JVPs are double VJPs: g(u) = u^T A is linear in u, and A v = d<g(u), v>/du.

Reported errors (``measure(..., errors={})``, ``metrics_error`` in the JSON) are 95% bounds:
the Hutch++ half-width (Student t on the probes' spread) combined with the certified Ritz
error; ``benchmarks/large_c.py`` measures how often they hold (coverage).

What stays exact at any C (one product each): the centroid mu = J^T 1 and the label row J_y
(VJPs), the centred label row (v = e_y - 1/C), J x (one JVP), hence |J x_hat|^2, the
numerator of ``jacobian_alignment_full``. Its denominator |J|_F^2 is not: a trace of a matrix
of rank r is not determined by fewer than r products in general, so it is estimated.

Random numbers come from a generator seeded with ``seed`` (default 0) per measurement and drawn
chunk after chunk: sketched values depend on the seed and the batch size, within their errors.
"""

from __future__ import annotations

import torch

from alignctl.errors import short
from alignctl.geometry.hutchpp import Estimate, probe_terms, rounding_rel, sum_squares
from alignctl.geometry.krylov import Krylov
from alignctl.geometry.products import Operator

__all__ = ["Operator", "Sketch", "norm", "pc1", "ratio_error", "resolve"]

MIN_CLASSES = 256  # above this many classes the spectrum metrics are sketched by default
DEFAULT_K = 16  # products per block (VJPs and JVPs) when sketching by default
MAX_BLOCKS = 5  # Krylov blocks at most (K VJPs + K JVPs each)
MAX_ROUNDS = 6  # rounds of max(K, MIN_ROUND) Hutch++ probes at most (one VJP each)
SV_TOL = 0.01  # grow the Krylov space until sigma_1^2 is certified to this, relative
FRO_TOL = 0.015  # add probes until |J|_F^2's (and |J_c|_F^2's) 95% half-width is this, relative
# Hutch++ probes per round at least (K when larger): a 95% half-width from the spread of 1-8
# probes of a low-rank tail (skewed terms) held on 81-88% of samples (K = 1-4), 92-99% with 16
MIN_ROUND = 16


def resolve(sketch: int | None, n_classes: int) -> int | None:
    """K for this measurement, or None for the exact path. ``sketch``: None (sketch with
    :data:`DEFAULT_K` above :data:`MIN_CLASSES` classes), 0 (never) or K >= 1 (whenever
    C > max(2K, :data:`MIN_ROUND`): else the exact path's C products are no more than the
    sketch's first block, K VJPs + K JVPs, or its first round of probes, and exact; with
    C <= 16 Rademacher probes also tie, and a zero spread read as a zero error)."""
    if sketch is None:
        return DEFAULT_K if n_classes > MIN_CLASSES else None
    try:  # int('abc') and int(nan) raise ValueError: input errors like any other
        whole = not isinstance(sketch, bool | str) and int(sketch) == sketch and sketch >= 0
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        from alignctl.errors import InputError

        raise InputError(
            f"sketch must be 0 (exact) or a number of probes K >= 1, not {short(sketch)}"
        )
    k = int(sketch)
    return k if 0 < k and n_classes > max(2 * k, MIN_ROUND) else None


def op_width(op: Operator) -> int:
    """s, the width of A (the flattened leaf, or the columns of ``right``)."""
    return op.leaf[0].numel() if op.right is None else op.right.shape[1]


def _centre(b: torch.Tensor) -> torch.Tensor:
    """(I - 11^T / C) b over the class dimension 1 (nothing to centre for C = 1)."""
    return b if b.shape[1] == 1 else b - b.mean(dim=1, keepdim=True)


class Sketch:
    """The sketched spectrum of every sample of a chunk, grown until certified or capped.

    First a block Krylov space (:class:`~alignctl.geometry.krylov.Krylov`) of K-column blocks,
    grown while some sample's certified relative error of sigma_1^2 exceeds :data:`SV_TOL`
    (at most :data:`MAX_BLOCKS` blocks; then one partial block when fewer than K directions of
    min(C, s) are left: the whole row space, exact), then Hutch++ probes (:mod:`.hutchpp`) in
    rounds of max(K, :data:`MIN_ROUND`) while some sample's 95% half-width of |J|_F^2 (or,
    ``centred``, of |J_c|_F^2) exceeds :data:`FRO_TOL` relative (at most :data:`MAX_ROUNDS`
    rounds; past the cap the half-width reported is the one reached). A sample whose row
    space the space holds (rank <= K - 1 after the first block) is exact: a chunk of them
    stops after one block and no probe.

    Attributes, float64 (n,) unless said: ``sv`` (n, m) Ritz values, ``fro2`` / ``cfro2``
    (|A|_F^2 and |(I - 11^T / C) A|_F^2) with their 95% half-widths ``fro2_half`` /
    ``cfro2_half``, ``tail`` / ``tail_half`` (the energy outside Q), ``sv_bound`` (relative
    error bound of sigma_1^2), ``rank_bound`` = min(C, s), ``sv_floor`` (n, 1), and the
    products spent: ``blocks`` (Krylov blocks), ``probes`` (Hutch++ probes)."""

    def __init__(self, op: Operator, n_classes: int, k: int, generator: torch.Generator,
                 ones_row: torch.Tensor | None = None, centred: bool = True):  # fmt: skip
        out = op.out
        n, c, dt, s = out.shape[0], n_classes, out.dtype, op_width(op)
        omega = torch.randn(n, c, k, generator=generator, device=out.device).to(dt)
        kr = Krylov(op, omega, min(c, s))
        while len(kr.qs) < MAX_BLOCKS and kr.can_grow() and not bool((kr.bound <= SV_TOL).all()):
            kr.grow()
        rest = kr.rank - kr.size
        if 0 < rest <= k and not bool(kr.captured.all()):
            kr.grow(rest)  # the whole row space for less than a round of probes: exact
        terms, cterms = [], []
        need = ~kr.captured
        cb2 = sum_squares(_centre(kr.b), (1, 2))
        while bool(need.any()) and len(terms) < MAX_ROUNDS:
            if ones_row is None:  # A^T 1, for the centred probes: one VJP
                ones_row = op.vjp(torch.ones_like(out).unsqueeze(-1))[:, 0]
            t, ct = probe_terms(op, kr.q, ones_row, max(k, MIN_ROUND), generator)
            terms.append(t)
            cterms.append(ct)
            wide = Estimate(kr.b2, torch.cat(terms, 1), c, s, dt).relative() > FRO_TOL
            if centred:  # |J_c|_F^2 too: rows nearly alike leave most of J_c outside Q
                wide |= Estimate(cb2, torch.cat(cterms, 1), c, s, dt).relative() > FRO_TOL
            need = need & wide
        fro = Estimate(kr.b2, torch.cat(terms, 1) if terms else None, c, s, dt, kr.captured)
        cfro = Estimate(cb2, torch.cat(cterms, 1) if cterms else None, c, s, dt, kr.captured)
        self.fro2, self.fro2_half = fro.value, fro.half
        self.tail, self.tail_half = fro.tail, fro.half
        # centring rows of size |A| leaves an absolute rounding of u_p |A|, not u_p |A_c|: a
        # J whose rows are nearly alike (A_c ~ 0) is centred to noise that, squared and
        # summed, is off by 2 u_p |A| |A_c| + (u_p |A|)^2 (u_p = rounding_rel)
        rel = rounding_rel(c, s, dt)
        rounding = rel * (2 * (fro.value.abs() * cfro.value.abs()).sqrt() + rel * fro.value.abs())
        self.cfro2, self.cfro2_half = cfro.value, torch.maximum(cfro.half, rounding)
        # Ritz values under the rounding floor are noise (the null directions of a captured
        # sample): 0, and a captured sample has no unknown tail (rank_bound: its basis size)
        self.sv = torch.where(kr.sv > kr.floor, kr.sv, 0)
        self.sv_floor, self.rank_bound = kr.floor, min(c, s)
        self.captured = kr.captured
        self.sv_bound = kr.capped(fro.tail + fro.half)
        self.blocks, self.probes = len(kr.qs), max(k, MIN_ROUND) * len(terms)
        self.rounding = rounding_rel(c, s, dt)  # of the float products, relative


def norm(sk: Sketch, centred: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(sqrt F, its 95% error sqrt F - sqrt(max(F - h, 0))), F the Hutch++ estimate of |J|_F^2
    (or |J_c|_F^2) and h its 95% half-width; float64 (n,) in units of the J scale."""
    fro2, half = (sk.cfro2, sk.cfro2_half) if centred else (sk.fro2, sk.fro2_half)
    value = fro2.clamp_min(0).sqrt()
    return value, value - (fro2 - half).clamp_min(0).sqrt()


def ratio_error(num: torch.Tensor, sk: Sketch, centred: bool = False):
    """(num / F, clamped to [0, 1], and its 95% error num / (F - h) - num / F + 2 sqrt(v) u_p):
    an exact numerator (|J x_hat|^2) over the Hutch++ denominator; 0 where F <= 0, error 1
    where F <= h. The last term is the numerator's rounding: J x from float products is off
    by about u_p |J|_F |x| (u_p = 2 sqrt(C + s) u, :func:`~alignctl.geometry.hutchpp.rounding_rel`),
    which moves |J x_hat|^2 / F by 2 sqrt(v) u_p, large against v itself when x is nearly
    orthogonal to J's row space."""
    fro2, half = (sk.cfro2, sk.cfro2_half) if centred else (sk.fro2, sk.fro2_half)
    ok, low = fro2 > 0, fro2 - half
    value = torch.where(ok, num / fro2.where(ok, 1), 0).clamp(0, 1)
    hi = torch.where(low > 0, num / low.where(low > 0, 1), torch.inf)
    err = hi - value + 2 * value.sqrt() * sk.rounding
    return value, torch.where(ok, err.clamp(max=1), 0)


def pc1(sk: Sketch) -> tuple[torch.Tensor, torch.Tensor]:
    """(theta / F, theta = sigma_1(B)^2 the top Ritz value squared and F the Hutch++ estimate,
    in [0, 1]; error: the largest distance to (theta (1 + e)) / (F - h) and theta / (F + h),
    e the certified relative error of theta (:class:`~alignctl.geometry.krylov.Krylov`: Ritz
    values are lower bounds) and h the 95% half-width of F)."""
    theta = sk.sv[:, 0].pow(2)
    value, _ = ratio_error(theta, sk)
    fro2, half = sk.fro2, sk.fro2_half
    low = fro2 - half
    hi = torch.where(low > 0, theta * (1 + sk.sv_bound) / low.where(low > 0, 1), torch.inf)
    lo = theta / (fro2 + half).where(fro2 + half > 0, 1)
    err = torch.maximum(hi - value, value - lo).clamp(max=1)
    return value, torch.where(fro2 > 0, err, 0)
