"""Run-time checks of the fast paths against the generic ones (first batch of every measure).

A fast path is taken only when its rules say it is exact; these checks make a case the rules
miss fall back instead of giving wrong numbers. On a few samples of the first batch:

- the linear-input shortcut: J_h W against the Jacobian of the generic path (C vector-Jacobian
  products through the whole model), per sample, in Frobenius norm relative to the generic
  Jacobian's, within :data:`TOL` for the dtype;
- the float32 Gram-matrix spectrum: normalised singular values sigma_i / sigma_1 against a
  float64 SVD of the same (float32) Jacobians, within 1e-4 absolute (where PC1 and the
  effective rank are documented to be exact).

A failed check returns a one-line reason; :func:`alignctl.measure` then takes the generic
path for the whole measurement and records the reason in ``notes``.
"""

from __future__ import annotations

import torch

TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}
SPECTRUM_TOL = 1e-4
N_CHECK = 4


def shortcut_error(generic: torch.Tensor, jh: torch.Tensor, w: torch.Tensor) -> float:
    """max over samples of |J_h W - J|_F / |J|_F (0/0 = 0), in float64."""
    fast = jh.double() @ w.double()
    ref = generic.double()
    diff = (fast - ref).flatten(1).norm(dim=1)
    ref_norm = ref.flatten(1).norm(dim=1)
    rel = torch.where(ref_norm > 0, diff / ref_norm.clamp_min(1e-300), diff)
    return float(rel.max()) if rel.numel() else 0.0


def check_shortcut(generic: torch.Tensor, jh: torch.Tensor, w: torch.Tensor) -> str | None:
    """None when the shortcut's Jacobians match the generic ones, else the reason."""
    err = shortcut_error(generic, jh, w)
    tol = TOL.get(generic.dtype, 1e-4)
    if err <= tol and err == err:
        return None
    return (
        f"the linear-input shortcut disagreed with the generic Jacobian on the first batch "
        f"(relative error {err:.2g} > {tol:g}); measured with the generic path"
    )


def check_spectrum(q) -> str | None:
    """None when the float32 Gram spectrum of the first samples matches a float64 SVD."""
    if q.x.dtype == torch.float64 or q.exact_spectrum:
        return None
    idx = torch.arange(min(N_CHECK, q.x.shape[0]), device=q.x.device)
    got = q.singular_values[idx]
    j = q.exact_jacobian(idx)
    j_ok = torch.isfinite(j).flatten(1).all(1)
    ref = torch.linalg.svdvals(torch.where(j_ok[:, None, None], j, 0))
    ref = torch.where(j_ok[:, None], ref, torch.nan)
    k = min(got.shape[1], ref.shape[1])
    finite = torch.isfinite(got).all(1) & torch.isfinite(ref).all(1)  # overflow: not this check's
    got, ref = got[finite, :k], ref[finite, :k]
    top = ref[:, :1].clamp_min(1e-300)
    err = float(((got / top) - (ref / top)).abs().max()) if ref.numel() else 0.0
    if err <= SPECTRUM_TOL:
        return None
    return (
        f"the float32 Gram-matrix spectrum disagreed with a float64 SVD on the first batch "
        f"(error {err:.2g} > {SPECTRUM_TOL:g} of sigma_1); singular values computed in float64"
    )
