"""What the metrics of one batch are computed from, derived lazily and cached.

The full Jacobian J (n, C, d) is held in one of two forms:
- ``jac``: J itself;
- ``jh`` and ``w``: J = J_h W for networks whose input enters through one linear layer
  h = W x + b (W: (k, d)), with J_h = df/dh (n, C, k). The metrics then never form J:
  mu = W^T (J_h^T 1), J x = J_h (W x), J J^T = J_h (W W^T) J_h^T, which for an MLP
  784-196-... skips the costliest product of every backward pass.
Cheaper paths give ``mu`` (one VJP with v = 1) or ``jy`` (one VJP with v = e_y) directly.
"""

from __future__ import annotations

from functools import cached_property

import torch


class Quantities:
    """x: (n, d) flattened inputs; y: (n,) labels or None; f, inp: the network and the
    chunk (n, ...) it takes, for ``needs="model"`` metrics; the rest see the module docstring."""

    def __init__(self, x, *, y=None, mu=None, jy=None, jac=None, jh=None, w=None, wx=None,
                 f=None, inp=None):  # fmt: skip
        self.x, self.y, self.f, self.inp = x, y, f, inp
        self._mu, self._jy, self.jac, self.jh, self.w, self._wx = mu, jy, jac, jh, w, wx

    @cached_property
    def mu(self) -> torch.Tensor:
        """Centroid J^T 1, (n, d)."""
        if self._mu is not None:
            return self._mu
        if self.jac is not None:
            return self.jac.sum(dim=1)
        return self.jh.sum(dim=1) @ self.w  # (n, k) @ (k, d)

    @cached_property
    def x_norm(self) -> torch.Tensor:
        return self.x.norm(dim=-1)

    @cached_property
    def mu_norm(self) -> torch.Tensor:
        return self.mu.norm(dim=-1)

    @cached_property
    def mu_inner(self) -> torch.Tensor:
        """<x, mu>, (n,)."""
        return (self.x * self.mu).sum(-1)

    @cached_property
    def jx(self) -> torch.Tensor:
        """J x, (n, C)."""
        if self.jac is not None:
            return torch.bmm(self.jac, self.x.unsqueeze(-1)).squeeze(-1)
        return torch.bmm(self.jh, self._wx.unsqueeze(-1)).squeeze(-1)

    @cached_property
    def gram(self) -> torch.Tensor:
        """J J^T (n, C, C), or J^T J (n, d, d) when d < C: the smaller one."""
        if self.jac is not None:
            j = self.jac if self.jac.shape[1] <= self.jac.shape[2] else self.jac.transpose(1, 2)
            return torch.bmm(j, j.transpose(1, 2))
        a = self.jh @ (self.w @ self.w.T)  # (n, C, k)
        return torch.bmm(a, self.jh.transpose(1, 2))

    @cached_property
    def fro2(self) -> torch.Tensor:
        """|J|_F^2 = trace of the Gram matrix, (n,)."""
        return self.gram.diagonal(dim1=1, dim2=2).sum(-1)

    @cached_property
    def n_classes(self) -> int:
        return (self.jac if self.jac is not None else self.jh).shape[1]

    def _label_sign(self) -> torch.Tensor:
        """The label's row index (C > 1), or +-1 for scalar outputs."""
        return torch.where(self.y > 0, 1.0, -1.0).to(self.x.dtype)

    @cached_property
    def label_inner(self) -> torch.Tensor:
        """<x, J_y>, (n,)."""
        if self._jy is not None:
            return (self.x * self._jy).sum(-1)
        if self.n_classes == 1:
            return self._label_sign() * self.jx[:, 0]
        return self.jx.gather(1, self.y.unsqueeze(1)).squeeze(1)

    @cached_property
    def label_norm(self) -> torch.Tensor:
        """|J_y|, (n,)."""
        if self._jy is not None:
            return self._jy.norm(dim=-1)
        if self.jac is not None and self.jac.shape[1] > self.jac.shape[2]:
            return self.jac[torch.arange(len(self.y)), self.y].norm(dim=-1)
        diag = self.gram.diagonal(dim1=1, dim2=2)  # (n, C): squared row norms
        row = diag[:, 0] if self.n_classes == 1 else diag.gather(1, self.y.unsqueeze(1))[:, 0]
        return row.clamp_min(0).sqrt()

    def exact_jacobian(self, idx: torch.Tensor) -> torch.Tensor:
        """J of the samples ``idx`` in float64, (m, C, d)."""
        if self.jac is not None:
            return self.jac[idx].double()
        return self.jh[idx].double() @ self.w.double()

    @cached_property
    def singular_values(self) -> torch.Tensor:
        """Singular values of each J in float64, descending, (n, min(C, d))."""
        return singular_values(self)


def singular_values(q: Quantities) -> torch.Tensor:
    """Batched singular values in float64, descending: (n, min(C, d)), or (n, C) with
    trailing zeros when J = J_h W has C > d.

    float64 inputs: LAPACK's SVD of J (exact to rounding). float32 inputs: square roots of the
    eigenvalues of the Gram matrix, several times faster than a float32 SVD. A float32 Gram
    matrix carries rounding errors of ~sqrt(d) eps32 sigma_1^2: harmless for large eigenvalues,
    not for small ones, so samples whose smallest eigenvalue is under 1e-2 of the largest
    (near rank-deficient Jacobians, e.g. aligned networks) get their Gram matrix recomputed
    in float64 from J, keeping every singular value within ~1e-8 sigma_1, well under float32's
    own rounding of J. Values below that noise floor are set to exactly 0 (a rank-one J then
    has PC1 = 1 and effective rank 1).
    """
    if q.x.dtype == torch.float64:
        return torch.linalg.svdvals(q.exact_jacobian(torch.arange(q.x.shape[0])))
    eig = torch.linalg.eigvalsh(q.gram.double())  # (n, k) ascending
    k = eig.shape[1]
    risky = (eig[:, 0] < 1e-2 * eig[:, -1]).nonzero().squeeze(-1)
    for idx in risky.split(64):  # small float64 copies: big ones cost page faults
        j = q.exact_jacobian(idx)  # (m, C, d)
        if j.shape[1] != k:  # the Gram matrix is J^T J
            j = j.transpose(1, 2)
        eig[idx] = torch.linalg.eigvalsh(torch.bmm(j, j.transpose(1, 2)))
    sv = eig.flip(-1).clamp_min(0).sqrt()
    floor = sv[:, :1] * (k * torch.finfo(torch.float64).eps) ** 0.5
    return torch.where(sv > floor, sv, torch.zeros_like(sv))
