"""What the metrics of one batch are computed from, derived lazily and cached.

The full Jacobian J (n, C, d) is held in one of two forms:
- ``jac``: J itself;
- ``jh`` and ``w``: J = J_h W for networks whose input enters through one linear layer
  h = W x + b (W: (k, d)), with J_h = df/dh (n, C, k). The metrics then never form J:
  mu = W^T (J_h^T 1), J x = J_h (W x), J J^T = J_h (W W^T) J_h^T, which for an MLP
  784-196-... skips the costliest product of every backward pass.
Cheaper paths give ``mu`` (one VJP with v = 1) or ``jy`` (one VJP with v = e_y) directly.

Scale: every tensor is divided, per sample, by the power of two nearest its largest entry
before any product (exact: no rounding), and scale-free quantities (cosines, PC1, effective
rank, alignment) are computed from the scaled tensors only. Weights x1e12 or x1e-12 then give
the same alignments as the unscaled network instead of overflowing (inf, a failed ``eigh``)
or underflowing (0) in a Gram matrix; quantities with units (norms, inner products) are the
scaled value times the scales, non-finite only when the value itself is not representable.
"""

from __future__ import annotations

import math
from functools import cached_property

import torch

import alignctl.geometry.svd as svd

SAFE = 2.0**30  # per-sample maxima within [1/SAFE, SAFE] need no scaling (see pow2_scale)


def pow2_scale(t: torch.Tensor, dims) -> tuple[torch.Tensor, torch.Tensor]:
    """(t divided by 2^e, 2^e as float64 (n,)) with 2^e the power of two nearest the largest
    |entry| of each sample (over ``dims``; e = 0 for an all-zero sample).

    When every sample's largest |entry| lies in [2^-30, 2^30] (or is 0), t is returned as it
    is with scales 1: products of such entries summed over any realistic size stay far inside
    float32's range (2^+-126), and the common case pays one reduction, not a copy."""
    flat = t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(-1, 1)
    if not flat.shape[1]:
        return t, torch.ones(t.shape[0], dtype=torch.float64, device=t.device)
    amax = torch.maximum(flat.amax(1).abs(), flat.amin(1).abs())  # faster than aminmax(dim)
    ones = torch.ones(t.shape[0], dtype=torch.float64, device=t.device)
    if bool(((amax == 0) | ((amax >= 1 / SAFE) & (amax <= SAFE))).all()):
        return t, ones
    _, e = torch.frexp(amax)
    lim = int(math.log2(torch.finfo(t.dtype).max))  # 127 for float32
    e = torch.where(torch.isfinite(amax), e, 0).clamp(-lim + 1, lim).double()
    shape = (-1,) + (1,) * (t.dim() - 1)
    return t * torch.pow(2.0, -e).to(t.dtype).reshape(shape), torch.pow(2.0, e)


def pow2_scale_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t scaled, scales, the scaled rows' 2-norms) for t (n, d), as :func:`pow2_scale` with
    ``dims=1``, deciding from the norms (needed anyway) instead of a max/min pass.

    If a row's computed norm lies in [2 sqrt(d) / SAFE, SAFE / 2], its largest |entry| lies in
    [1/SAFE, SAFE] (max <= norm <= sqrt(d) max, with a factor 2 for rounding and for squares
    that underflowed, which only lower the computed norm), so pow2_scale would not scale it.
    Any other row (0, tiny, huge, inf, nan) sends the whole batch through pow2_scale."""
    norm = t.norm(dim=-1)
    d = t.shape[-1]
    lo, hi = torch.aminmax(norm) if norm.numel() else (norm.new_zeros(()), norm.new_zeros(()))
    if d and float(lo) >= 2 * math.sqrt(d) / SAFE and float(hi) <= SAFE / 2:  # nan: False
        return t, torch.ones(t.shape[0], dtype=torch.float64, device=t.device), norm
    ts, scale = pow2_scale(t, 1)
    return ts, scale, ts.norm(dim=-1)


def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den elementwise, 0 where den is 0 (cosines with a zero vector)."""
    return torch.where(den > 0, num / torch.where(den > 0, den, 1), 0)


class Quantities:
    """x: (n, d) flattened inputs; y: (n,) labels or None; f, inp: the network (a function
    of the chunk) and the chunk (n, ...) it takes, and module: the ``nn.Module`` whose layers f
    runs, for ``needs="model"`` metrics; the rest see the module docstring.
    ``rw``: R_w^T of W (:func:`alignctl.geometry.svd.weight_factor`; computed when absent).
    ``exact_spectrum``: singular values from float64 J for every sample.
    ``sketch``: a :class:`alignctl.geometry.sketch.Sketch` (randomized estimates, many
    classes) instead of J; the metrics then record their per-sample errors in ``errors``."""

    def __init__(self, x, *, y=None, mu=None, jy=None, jac=None, jh=None, w=None, wx=None,
                 rw=None, exact_spectrum=False, f=None, inp=None, module=None,
                 sketch=None):  # fmt: skip
        self.x, self.y, self.exact_spectrum = x, y, exact_spectrum
        self.sketch, self.errors = sketch, {}
        self.f, self.inp, self.module = f, inp, module
        self.xs, self.x_scale, self._xs_norm = pow2_scale_rows(x)
        self._mu, self._jy, self.jac, self.jh = mu, jy, jac, jh
        self.w, self._wx, self._rw = w, wx, rw  # unscaled, for metrics that form J_h W themselves
        if jac is not None:
            self.js, self.j_scale = pow2_scale(jac, (1, 2))
        elif jh is not None:
            self.jhs, h_scale = pow2_scale(jh, (1, 2))
            self.ws, w_scale = pow2_scale(w.reshape(1, *w.shape), (1, 2))
            self.ws, self._w_scale = self.ws[0], float(w_scale[0])
            self.j_scale = h_scale * w_scale
            scale = (w_scale * self.x_scale).unsqueeze(-1)
            self.wxs = wx if bool((scale == 1).all()) else (wx.double() / scale).to(wx.dtype)

    def estimate(self, name: str, value_error) -> torch.Tensor:
        """A sketched metric's value in the batch's dtype; its error goes to ``errors``."""
        value, error = value_error
        self.errors[name] = error.to(self.x.dtype)
        return value.to(self.x.dtype)

    def _real(self, scaled: torch.Tensor, *scales: torch.Tensor) -> torch.Tensor:
        """A scaled quantity times its scales, in the batch's dtype (inf if not representable)."""
        value = scaled.double()
        for s in scales:
            value = value * s
        return value.to(self.x.dtype)

    @cached_property
    def _mu_scaled(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mu scaled, its scale, its norm): the centroid J^T 1."""
        if self._mu is not None:
            return pow2_scale_rows(self._mu)
        if self.jac is not None:
            mus = self.js.sum(dim=1)
        else:
            mus = self.jhs.sum(dim=1) @ self.ws  # (n, k) @ (k, d)
        return mus, self.j_scale, mus.norm(dim=-1)

    @cached_property
    def _mu_parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(<x, mu>, |mu|) in units of the scales, and mu's scale."""
        mus, scale, norm = self._mu_scaled
        return (self.xs * mus).sum(-1), norm, scale

    @cached_property
    def x_norm(self) -> torch.Tensor:
        return self._real(self._xs_norm, self.x_scale)

    @cached_property
    def mu_norm(self) -> torch.Tensor:
        _, norm, scale = self._mu_parts
        return self._real(norm, scale)

    @cached_property
    def mu_inner(self) -> torch.Tensor:
        """<x, mu>, (n,)."""
        inner, _, scale = self._mu_parts
        return self._real(inner, self.x_scale, scale)

    @cached_property
    def mu_cos(self) -> torch.Tensor:
        """cos(x, mu), (n,)."""
        inner, norm, _ = self._mu_parts
        return ratio(inner, self._xs_norm * norm)

    @cached_property
    def jxs(self) -> torch.Tensor:
        """J x in units of the J and x scales, (n, C)."""
        if self.jac is not None:
            return torch.bmm(self.js, self.xs.unsqueeze(-1)).squeeze(-1)
        return torch.bmm(self.jhs, self.wxs.unsqueeze(-1)).squeeze(-1)

    @cached_property
    def gram(self) -> torch.Tensor:
        """Scaled J J^T (n, C, C), or J^T J (n, d, d) when d < C: the smaller one."""
        if self.jac is not None:
            j = self.js if self.js.shape[1] <= self.js.shape[2] else self.js.transpose(1, 2)
            return torch.bmm(j, j.transpose(1, 2))
        m = self.jh_factor  # J J^T = J_h W W^T J_h^T = (J_h R_w^T)(J_h R_w^T)^T
        return torch.bmm(m, m.transpose(1, 2))

    @cached_property
    def jh_factor(self) -> torch.Tensor:
        """M = J_h R_w^T (n, C, min(k, d)), scaled, with W^T = Q_w R_w: J = M Q_w^T has M's
        singular values (:mod:`alignctl.geometry.svd`)."""
        rw = self._rw if self._rw is not None else svd.weight_factor(self.w)
        return self.jhs @ (rw / self._w_scale).to(self.jhs.dtype)  # exact: a power of two

    @cached_property
    def fro2(self) -> torch.Tensor:
        """Scaled |J|_F^2 = trace of the Gram matrix, (n,)."""
        return self.gram.diagonal(dim1=1, dim2=2).sum(-1)

    @cached_property
    def fro(self) -> torch.Tensor:
        """|J|_F, (n,)."""
        return self._real(self.fro2.clamp_min(0).sqrt(), self.j_scale)

    @cached_property
    def alignment_full(self) -> torch.Tensor:
        """|J x_hat|^2 / |J|_F^2, (n,)."""
        return ratio(self.jxs.pow(2).sum(-1), self._xs_norm.pow(2) * self.fro2).clamp(0, 1)

    @cached_property
    def n_classes(self) -> int:
        return (self.jac if self.jac is not None else self.jh).shape[1]

    def _label_sign(self) -> torch.Tensor:
        """+-1 for scalar outputs (labels > 0 are positive)."""
        return torch.where(self.y > 0, 1.0, -1.0).to(self.x.dtype)

    @cached_property
    def _label(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(<x, J_y> scaled, |J_y| scaled, their common J scale)."""
        if self._jy is not None:
            jys, scale = pow2_scale(self._jy, 1)
            return (self.xs * jys).sum(-1), jys.norm(dim=-1), scale
        if self.n_classes == 1:
            inner = self._label_sign() * self.jxs[:, 0]
        else:
            inner = self.jxs.gather(1, self.y.unsqueeze(1)).squeeze(1)
        if self.jac is not None and self.js.shape[1] > self.js.shape[2]:
            norm = self.js[torch.arange(len(self.y)), self.y].norm(dim=-1)
        else:
            diag = self.gram.diagonal(dim1=1, dim2=2)  # (n, C): squared row norms
            row = diag[:, 0] if self.n_classes == 1 else diag.gather(1, self.y.unsqueeze(1))[:, 0]
            norm = row.clamp_min(0).sqrt()
        return inner, norm, self.j_scale

    @cached_property
    def label_inner(self) -> torch.Tensor:
        """<x, J_y>, (n,)."""
        inner, _, scale = self._label
        return self._real(inner, self.x_scale, scale)

    @cached_property
    def label_cos(self) -> torch.Tensor:
        """cos(x, J_y), (n,)."""
        inner, norm, _ = self._label
        return ratio(inner, self._xs_norm * norm)

    def factor(self, idx: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """A matrix with the singular values of the scaled J of the samples ``idx``: J
        itself, or J_h R_w^T (float32, :mod:`alignctl.geometry.svd`); float64 J if ``exact``."""
        if exact or self.jac is not None:
            return self.exact_jacobian(idx) if exact else self.js[idx]
        return self.jh_factor[idx]

    def exact_jacobian(self, idx: torch.Tensor) -> torch.Tensor:
        """The scaled J of the samples ``idx`` in float64, (m, C, d)."""
        if self.jac is not None:
            return self.js[idx].double()
        return self.jhs[idx].double() @ self.ws.double()

    @cached_property
    def singular_values(self) -> torch.Tensor:
        """Singular values of each scaled J in float64, descending, (n, min(C, d))."""
        return singular_values(self)


def singular_values(q: Quantities) -> torch.Tensor:
    """Batched singular values of the scaled J in float64, descending: (n, min(C, d)), or
    (n, C) with trailing zeros when J = J_h W has C > d.

    float64 inputs: an SVD of float64 J. float32 inputs: square roots of the eigenvalues of the
    float32 Gram matrix, several times faster than an SVD, for the samples where that is
    accurate; near rank-deficient samples (aligned networks) from a float32 QR + SVD that
    never squares J, float64 only for the samples whose rounding bound that does not meet
    (:mod:`alignctl.geometry.svd`). ``exact_spectrum``: every sample from float64 J (set by
    :mod:`alignctl.geometry.verify` when the first batch disagreed with a float64 SVD).
    """
    n = q.x.shape[0]
    if q.x.dtype == torch.float64:
        j = q.exact_jacobian(torch.arange(n))
        ok = torch.isfinite(j).flatten(1).all(1)  # an overflowed J has no spectrum: NaN
        sv = torch.linalg.svdvals(torch.where(ok[:, None, None], j, 0))
        return torch.where(ok[:, None], sv, torch.nan)
    return svd.from_gram(q.gram, q.factor, exact=q.exact_spectrum)
