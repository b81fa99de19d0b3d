"""Hutch++ estimates of |A|_F^2 and |(I - 11^T / C) A|_F^2 from VJPs, with a 95% half-width
(many classes, :mod:`.sketch`).

Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021): with Q (s, m) an orthonormal basis from
the range finder (:mod:`.krylov`) and B = A Q already computed,
|A|_F^2 = |B|_F^2 + |A (I - QQ^T)|_F^2, the first term exact, the second a Hutchinson estimate.
It is taken on the class side: for a Rademacher g (C,), E |(I - QQ^T) A^T g|^2 =
tr(A (I - QQ^T) A^T) (E g g^T = I), so each probe is one VJP (one backward pass, cheaper than
the JVP of the textbook form, which is a double VJP here) and the centred operator comes from
the same probes: A^T (I - 11^T / C) g = A^T g - mean(g) A^T 1 (A^T 1, the centroid row, is one
more VJP). N = A (I - QQ^T) A^T has the nonzero eigenvalues of the textbook form's
(I - QQ^T) A^T A (I - QQ^T): the same variance for Gaussian probes, 2 |N|_F^2 / p for p probes.

Error: the probes' sample standard deviation over sqrt(p), times the Student t quantile
t_{0.975, p - 1} (95% two-sided; Cornish-Fisher expansion, within 5e-3 for p >= 4, tabled
below), and at least the rounding of the float products, 2 sqrt(C + s) u |A|_F^2 (u the unit
roundoff of their dtype). The half-width is an estimate: ``benchmarks/large_c.py`` measures its
coverage (the share of samples whose true error is within it).
"""

from __future__ import annotations

import math

import torch

Z975 = 1.959963984540054  # the standard normal's 0.975 quantile


def t975(df: int) -> float:
    """Student's t 0.975 quantile with ``df`` degrees of freedom (Cornish-Fisher expansion,
    Abramowitz & Stegun 26.7.5, four terms; inf for df < 1)."""
    if df < 1:
        return math.inf
    if df < 3:  # where the expansion is poor: the tabled values
        return (12.706, 4.303)[df - 1]
    z = Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def rounding_rel(c: int, s: int, dt) -> float:
    """2 sqrt(C + s) u: the relative rounding of float products with an (n, C, s) operator in
    dtype ``dt`` (u its unit roundoff). The factor 2 covers what sqrt(C + s) u alone missed
    by up to 15% (float32, C + s = 46): the squares' sums and the result's own rounding."""
    return (c + s) ** 0.5 * torch.finfo(dt).eps


def sum_squares(t: torch.Tensor, dims) -> torch.Tensor:
    """Sum of squares over ``dims`` as float64. Summed in t's dtype (pairwise), whose rounding,
    about log2(count) u relative, stays under the rounding term of the half-widths."""
    return (t * t).sum(dims).double()


def probe_terms(op, q, ones_row, p: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(|(I - QQ^T) A^T g_j|^2, the same with (I - 11^T / C) g_j), float64 (n, p) each, for p
    Rademacher probes g_j (n, C) per sample: p VJPs. ``ones_row`` (n, s) is A^T 1."""
    out = op.out
    n, c = out.shape
    g = torch.randint(0, 2, (n, c, p), generator=generator, device=out.device).to(out.dtype)
    g = g * 2 - 1
    rows = op.vjp(g)  # (n, p, s)
    crows = rows - g.mean(1).unsqueeze(-1) * ones_row.unsqueeze(1)

    def deflate(r):
        return r - (r @ q) @ q.transpose(1, 2)

    return sum_squares(deflate(rows), 2), sum_squares(deflate(crows), 2)


class Estimate:
    """|A|_F^2 = ``b2`` (exact, |B|_F^2) + the mean of the probe ``terms`` (n, p): ``value``,
    ``tail`` (the probes' part, the energy outside Q), ``half`` (95% half-width of both), all
    float64 (n,). With no probes, and on the samples ``captured`` (n,) whose row space Q
    holds, the tail is 0 (the probes' terms there are rounding noise)."""

    def __init__(self, b2, terms: torch.Tensor | None, c: int, s: int, dt, captured=None):
        rel = rounding_rel(c, s, dt)
        if terms is None or terms.shape[1] == 0:
            self.tail = torch.zeros_like(b2)
            spread = torch.zeros_like(b2)
        else:
            p = terms.shape[1]
            self.tail = terms.mean(1)
            sd = terms.std(dim=1, unbiased=True) if p > 1 else terms[:, 0] * math.inf
            spread = t975(p - 1) * sd / math.sqrt(p)
            if captured is not None:
                self.tail = torch.where(captured, 0, self.tail)
                spread = torch.where(captured, 0, spread)
        self.value = b2 + self.tail
        self.half = torch.maximum(spread, rel * self.value.abs())
        self.spread = spread  # the sampling part alone (0 for a captured row space)

    def relative(self) -> torch.Tensor:
        """half / value (inf where the value is <= 0 and the half-width is not 0)."""
        v = self.value
        return torch.where(v > 0, self.half / v.clamp_min(1e-300), (self.half > 0) * math.inf)
