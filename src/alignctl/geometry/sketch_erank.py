"""The effective rank (Roy & Vetterli) from a sketch: the top K Ritz values and the tail energy.

Only the top K singular values of a sample's Jacobian are known (:class:`.sketch.Sketch`), and
the energy E of the rest (Hutch++'s Hutchinson part), not how E splits: the estimate is the
midpoint of the extreme completions of the tail and its error their half-spread
(:func:`erank`). Used by ``jacobian_erank`` under a sketch (:mod:`.metrics.spectrum`).
"""

from __future__ import annotations

import torch

from alignctl.geometry.sketch import Sketch


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
    remaining directions, with E taken at the top (spread) and bottom (concentrated) of
    its 95% interval. The Ritz values are lower bounds of the top K, not the top K, so the
    error also covers the completions where they take part of E: E into sigma_1 alone and E
    water-filled from the bottom (:func:`_water_fill`); without them the error held on 3% of
    the samples at K = min(C, s) - 1 (one unseen direction, where both completions agree).
    When E is 0 (rank <= K) all agree: the exact value, with the rounding of the float
    products, sqrt(min(C, s)) u_p (:func:`~alignctl.geometry.hutchpp.rounding_rel`), relative,
    as its error."""
    sv, k = sk.sv, sk.sv.shape[1]
    # |B|_F^2 = sum sigma_i(B)^2: the tail is the Hutchinson part, no difference is taken
    hi = torch.where(sk.captured, 0, (sk.tail + sk.tail_half).clamp_min(0))  # captured: E = 0
    lo = torch.where(sk.captured, 0, (sk.tail - sk.tail_half).clamp_min(0))
    m = max(sk.rank_bound - k, 0)
    one = torch.ones_like(sv[:, :1])
    top = (sv, torch.ones_like(sv))

    def rounding(value):  # the float products' rounding, relative (see the docstring)
        return value * sk.sv_floor[:, 0] / sv[:, 0].clamp_min(1e-300) * (sk.rank_bound**0.5)

    if m == 0:  # the space holds every direction (K >= min(C, s)): no tail, only rounding
        value = _entropy_rank([top])
        return value, rounding(value)
    even = (hi / m).sqrt().unsqueeze(1)
    even = torch.where(even > sk.sv_floor, even, 0)
    spread = _entropy_rank([top, (even, one * m)])
    conc = _concentrated(sv, lo, m)
    value = (spread + conc) / 2
    # the Ritz values are lower bounds, not the top K singular values (an unconverged space):
    # part of E may belong to them. The error also covers the two completions that allows at
    # its extremes, E into sigma_1 alone and E water-filled from the bottom (the Ritz values
    # raised to a common level); the value is kept (as exact where the space has converged)
    # (not capped by sigma_1's Kato-Temple certificate: not a proved bound, and with it the
    # error held on 84% of samples at K = min(C, s) - 1)
    low = torch.minimum(conc, _entropy_rank([(_into_top(sv, hi), torch.ones_like(sv))]))
    high = torch.maximum(spread, _entropy_rank(_water_fill(sv, hi, m)))
    err = torch.maximum(high - value, value - low).clamp_min(0)
    return value, torch.maximum(err, (spread - conc).abs() / 2) + rounding(value)


def _concentrated(sv: torch.Tensor, e: torch.Tensor, m: int) -> torch.Tensor:
    """The effective rank of sv (n, k) completed by the energy e (n,) concentrated over at most
    m more directions: as many values sigma_1 as it holds, then the remainder (no tail value
    exceeds sigma_1; Ritz values of the tail are not bounds)."""
    last, one = sv[:, :1], torch.ones_like(sv[:, :1])
    full = torch.where(last > 0, e.unsqueeze(1) / last.pow(2).clamp_min(1e-300), 0).floor()
    full = full.clamp(max=m)
    rem = (e.unsqueeze(1) - full * last.pow(2)).clamp_min(0).sqrt()
    rem = torch.where(full < m, rem, 0)
    return _entropy_rank([(sv, torch.ones_like(sv)), (last.expand_as(full), full), (rem, one)])


def _into_top(sv: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """The Ritz values (n, m) with the energy e (n,) added to sigma_1^2: the most
    concentrated spectrum with sigma_i >= the Ritz values and |J|_F^2 = |B|_F^2 + e."""
    first = (sv[:, :1].pow(2) + e.unsqueeze(1)).sqrt()
    return torch.cat([first, sv[:, 1:]], 1)


def _water_fill(sv: torch.Tensor, e: torch.Tensor, m: int):
    """The most even spectrum with sigma_i >= the Ritz values sv (n, k) and |J|_F^2 = |B|_F^2
    + e over k + m directions: the m unseen ones and the smallest Ritz values raised to one
    level lam, lam^2 = (e + sum of the raised ones' squares) / (raised + m), as groups for
    :func:`_entropy_rank`."""
    k = sv.shape[1]
    asc2 = sv.flip(1).pow(2)  # (n, k) ascending squares
    raised = torch.cat([torch.zeros_like(asc2[:, :1]), asc2.cumsum(1)], 1)  # (n, k + 1)
    j = torch.arange(k + 1, device=sv.device, dtype=sv.dtype)
    lam2 = (raised + e.unsqueeze(1)) / (j + m)
    fits = torch.cat([torch.ones_like(asc2[:, :1], dtype=torch.bool), asc2 <= lam2[:, 1:]], 1)
    count = fits.long().cumprod(1).sum(1, keepdim=True) - 1  # the leading run that fits
    lam = lam2.gather(1, count).sqrt()  # (n, 1)
    return [(torch.maximum(sv, lam), torch.ones_like(sv)), (lam, torch.full_like(lam, m))]
