"""Block Krylov Rayleigh-Ritz for the top singular values of per-sample operators A (n, C, s),
grown block by block until the top one is certified (many classes, :mod:`.sketch`).

Space: K(A^T A, A^T Omega) = [A^T Omega, (A^T A) A^T Omega, ...] with Omega Gaussian (C, K)
(Halko, Martinsson & Tropp, SIAM Review 53(2), 2011, Algorithm 4.4; block Krylov form: Musco
& Musco, NeurIPS 2015). Q (s, m) is an orthonormal basis, B = A Q (C, m); each block costs K
VJPs (A^T) and K JVPs (A). The Ritz values sigma_i(B) are lower bounds: sigma_i(B) <=
sigma_i(A) (|Q|_2 = 1, Cauchy interlacing).

Certificate of the top one: for M = A^T A, the Ritz pair (theta = sigma_1(B)^2, v = Q w_1)
has the residual r = M v - theta v = sigma_1 (A^T u_1 - sigma_1 v), u_1 = B w_1 / sigma_1,
which costs one VJP. If every eigenvalue of M but lambda_1 is <= alpha < theta, the
Kato-Temple inequality gives 0 <= lambda_1 - theta <= |r|^2 / (theta - alpha) (Kato 1949,
Temple 1928; the residual and gap bounds of Bai et al., "Templates for the Solution of
Algebraic Eigenvalue Problems", SIAM 2000, section 4.8). Proof in one line: with v = sum c_i
x_i over M's eigenvectors, sum c_i^2 (lambda_i - lambda_1)(lambda_i - alpha) >= 0 (both
factors <= 0 for i > 1), and expanding around theta gives |r|^2 - (lambda_1 - theta)(theta -
alpha) >= 0. alpha is taken as theta_2 + |r_2| (the second Ritz value plus its residual
norm: by the residual theorem an eigenvalue lies within |r_2| of theta_2). This alpha is not
a proved upper bound of lambda_2 (Ritz values approach from below), so the certificate is
checked by its coverage: ``benchmarks/large_c.py`` prints how often it holds. A rigorous but
loose bound is combined with it once the energy outside Q is known (:mod:`.hutchpp`):
sigma_1(A) <= sigma_1(B) + |A (I - QQ^T)|_F.

A Jacobian of rank r < K is captured by the first block: A^T Omega spans A's row space (with
probability one), the other K - r basis vectors lie in A's null space, and their Ritz values
are rounding noise; such a sample is exact and needs no more products.
"""

from __future__ import annotations

import torch

from alignctl.geometry.products import Operator


def orth(y: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns spanning y (n, m, K) (reduced Householder QR)."""
    return torch.linalg.qr(y, mode="reduced")[0]


def ritz(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(singular values (n, m) descending, right singular vectors (n, m, m) as columns) of B
    from its float64 Gram B^T B (n, m, m): an eigendecomposition of m x m instead of an SVD
    of the tall C x m B. The Gram's eigenvalues are exact to about m eps_64 |B|_2^2, so a
    singular value is exact to sqrt(m eps_64) sigma_1 ~ 1e-7 sigma_1 absolute, under the floor
    sqrt(C + s) u_32 sigma_1 below which float32 products are noise anyway (``Krylov.floor``).
    A sample whose Gram is not finite (a NaN input) gets NaN values."""
    # a non-finite sample (a NaN input) would fail the whole batch's eigh: its values are NaN
    bad = ~torch.isfinite(gram).all(-1).all(-1)
    evals, evecs = torch.linalg.eigh(torch.where(bad[:, None, None], 0, gram))
    sv = evals.flip(-1).clamp_min(0).sqrt()
    return torch.where(bad[:, None], torch.nan, sv), evecs.flip(-1)


class Krylov:
    """The growing block Krylov space of every sample of a chunk: ``q`` (n, s, m), ``b`` =
    A q (n, C, m), their Ritz values ``sv`` (n, m) and the certificate ``bound`` (n,): an
    upper bound of (sigma_1(A)^2 - sv_1^2) / sv_1^2 (0 for a captured sample)."""

    def __init__(self, op: Operator, omega: torch.Tensor, rank: int):
        self.op, self.rank = op, rank
        q = orth(op.vjp(omega).transpose(1, 2))
        self.qs, self.bs = [q], [op.jvp(q)]
        self.bd = self.bs[0].double()
        self.gram = self.bd.transpose(1, 2) @ self.bd  # float64 B^T B, grown block by block
        self.update()

    @property
    def size(self) -> int:
        return sum(q.shape[2] for q in self.qs)

    def can_grow(self) -> bool:
        """Whether one more block fits under ``rank`` >= rank(A) (past it, nothing is new)."""
        return self.size + self.qs[0].shape[2] <= self.rank

    def grow(self, cols: int | None = None) -> None:
        """One more block, A^T A times the last one: K VJPs and K JVPs (``cols`` < K: its
        first ``cols`` directions, to complete a space of ``rank`` directions)."""
        last = orth(self.bs[-1])
        y = self.op.vjp(last if cols is None else last[:, :, :cols]).transpose(1, 2)  # (n, s, K)
        basis = torch.cat(self.qs, 2)
        # the new block from a Householder QR of [basis, y]: orthonormal to the basis even when
        # y lies (numerically) in its span, as it does once the space holds J's numerical rank
        # (Gram-Schmidt on y then a QR of the remainder normalised rounding noise that was not
        # orthogonal to the basis: |AQ|_F exceeded |J|_F by 12% on a tiny ViT)
        q = orth(torch.cat([basis, y], 2))[:, :, basis.shape[2] :]
        self.qs.append(q)
        self.bs.append(self.op.jvp(q))
        new = self.bs[-1].double()
        cross = self.bd.transpose(1, 2) @ new  # (n, m, K)
        self.gram = torch.cat([torch.cat([self.gram, cross], 2),
                               torch.cat([cross.transpose(1, 2), new.transpose(1, 2) @ new], 2)],
                              1)  # fmt: skip
        self.bd = torch.cat([self.bd, new], 2)
        self.update()

    def update(self) -> None:
        """Ritz values, the captured samples and the top pair's certificate (one VJP)."""
        self.q, self.b = torch.cat(self.qs, 2), torch.cat(self.bs, 2)
        c, s = self.b.shape[1], self.q.shape[1]
        self.sv, vb = ritz(self.gram)
        self.b2, bd = self.gram.diagonal(dim1=1, dim2=2).sum(-1), self.bd
        # singular values under this are rounding noise: of the float products, or of the
        # float64 Gram's eigenvalues (sqrt(m eps_64) sigma_1, which dominates for float64)
        m = self.gram.shape[-1]
        rel = max((c + s) ** 0.5 * torch.finfo(self.b.dtype).eps / 2, 4 * (m * 2.0**-52) ** 0.5)
        self.floor = rel * self.sv[:, :1]
        # a basis vector A maps to noise, or rank >= rank(A) of them, all taken as A^T u: the
        # space holds A's row space (see the docstring)
        self.captured = (self.sv <= self.floor).any(1) | (self.sv[:, 0] == 0) | (m >= self.rank)
        pairs = min(2, self.sv.shape[1])
        top = self.sv[:, :pairs].clamp_min(1e-300)  # (n, p)
        u = (bd @ vb[:, :, :pairs]) / top.unsqueeze(1)  # (n, C, p) left Ritz vectors
        at_u = self.op.vjp(u.to(self.b.dtype)).double()  # (n, p, s): one VJP per pair
        v = self.q.double() @ vb[:, :, :pairs]  # (n, s, p)
        res = (at_u - (top.unsqueeze(1) * v).transpose(1, 2)).norm(dim=2)  # |A^T u - s v|
        r_m = self.sv[:, :pairs] * res  # |M v - theta v|, (n, p)
        theta = self.sv[:, :pairs].pow(2)
        if pairs == 2:
            gap = theta[:, 0] - (theta[:, 1] + r_m[:, 1])
            kt = torch.where(gap > 0, r_m[:, 0].pow(2) / gap.clamp_min(1e-300), torch.inf)
        else:
            kt = torch.full_like(theta[:, 0], torch.inf)
        rel = kt / theta[:, 0].clamp_min(1e-300)
        # a NaN sample (non-finite products) has nothing to certify: no block for it
        self.bound = torch.where(self.captured | self.sv[:, 0].isnan(), 0, rel)

    def capped(self, tail_hi: torch.Tensor) -> torch.Tensor:
        """``bound`` with the rigorous sigma_1(A) <= sigma_1(B) + t, t^2 = ``tail_hi`` (n,),
        an upper estimate of |A (I - QQ^T)|_F^2: min(bound, (2 sigma_1 t + t^2) / sigma_1^2)."""
        s1 = self.sv[:, 0]
        t = tail_hi.clamp_min(0).sqrt()
        rigorous = torch.where(s1 > 0, (2 * s1 * t + t * t) / s1.pow(2).clamp_min(1e-300), 0)
        return torch.minimum(self.bound, rigorous)
