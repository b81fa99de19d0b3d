"""Local complexity (Humayun, Balestriero & Baraniuk 2024, "Deep networks always grok and here
is why"): how many linear-region boundaries cross a small neighbourhood of each input.

The neighbourhood of x is the cross-polytope with the 2P vertices x +- r u_p, p = 1..P, where
u_1..u_P are orthonormal directions of a random P-dimensional subspace of the input space (a
dimension reduction, as in the paper: a full cross-polytope in R^d has 2d vertices). A neuron's
boundary crosses the neighbourhood when its pre-activation does not have one sign at every
vertex; the local complexity is the number of such neurons (units of ReLU/LeakyReLU/PReLU,
Hardtanh kinks, and max-pool windows whose argmax changes), summed over all layers:

    LC(x) = sum_units [ pattern_u(x + r u_p s) is not the same for all p, s in {-1, +1} ]

Choices (documented because the paper leaves them to the experiment): P = ``DIRECTIONS`` = 8
(or d when d < 8); r = ``RADIUS`` |x| with ``RADIUS`` = 0.05, a radius relative to the input's
norm so that one setting serves inputs of any scale (x = 0 has LC = 0); directions drawn from
a CPU generator seeded with ``SEED``, the same for every sample, so values are deterministic
and do not depend on the batch. For token models the neighbourhood lives in the embedding space.

The value is exact for networks whose nonlinearities are the modules above. Smooth activations
(tanh, GELU, ...) have no linear regions: InputError. Nonlinearities that module hooks cannot
see (``torch.relu`` in ``forward``) are caught at run time: a neighbourhood with no boundary
must be affine, f(x + r u) + f(x - r u) = 2 f(x); if it is not, InputError.
"""

from __future__ import annotations

import math

import torch

from alignctl.errors import InputError
from alignctl.geometry.metrics import Quantities, register_metric

RADIUS = 0.05
DIRECTIONS = 8
SEED = 0
_GROUP = 256  # samples whose 2P + 1 points go through the network at once


def directions(d: int, p: int = DIRECTIONS, seed: int = SEED) -> torch.Tensor:
    """(min(p, d), d) orthonormal rows spanning a random subspace, float64, seeded."""
    g = torch.Generator().manual_seed(seed)
    gauss = torch.randn(d, min(p, d), generator=g, dtype=torch.float64)
    return torch.linalg.qr(gauss).Q.T


def _module_of(f) -> torch.nn.Module:
    return f.__self__ if hasattr(f, "__self__") else f


def local_complexity(f, inp: torch.Tensor, *, radius: float = RADIUS, n_dir: int = DIRECTIONS,
                     seed: int = SEED, module=None) -> torch.Tensor:  # fmt: skip
    """LC of every input (module docstring): f maps inp (n, ...) to outputs; returns (n,) in
    inp's dtype. ``module``: the nn.Module whose layers f runs (default: f itself, or the
    module a bound method belongs to). Raises InputError for networks that are not piecewise
    linear."""
    from alignctl.geometry.regions import record_patterns, scan

    model = module if module is not None else _module_of(f)
    if not isinstance(model, torch.nn.Module):
        raise InputError("local_complexity needs the network's nn.Module (module=...)")
    _, smooth = scan(model)
    if smooth:
        raise InputError(
            f"local_complexity needs a piecewise-linear network; this one has {', '.join(smooth)}"
        )
    n, shape = inp.shape[0], inp.shape[1:]
    flat = inp.reshape(n, -1)
    u = directions(flat.shape[1], n_dir, seed).to(device=inp.device, dtype=inp.dtype)
    offsets = torch.cat([u, -u])  # (2P, d): the vertices' offsets, for a unit radius
    counts = []
    with torch.no_grad():
        for xs in flat.split(_GROUP):
            m, v = xs.shape[0], offsets.shape[0]
            r = radius * xs.norm(dim=1, keepdim=True)  # (m, 1)
            pts = xs[:, None, :] + r[:, :, None] * offsets[None]  # (m, 2P, d)
            pts = torch.cat([xs[:, None, :], pts], dim=1)  # the centre first: (m, 2P + 1, d)
            count = torch.zeros(m, dtype=torch.long, device=inp.device)

            def crossed(k, module, p, m=m, v=v, count=count):
                p = p.reshape(m, v + 1, -1)[:, 1:]  # the vertices' patterns (m, 2P, units)
                count.add_((p != p[:, :1]).any(dim=1).sum(dim=1))

            with record_patterns(model, crossed):
                out = f(pts.reshape(m * (v + 1), *shape))
            _check_affine(out.reshape(m, v + 1, -1), count, v // 2)
            counts.append(count)
    return torch.cat(counts).to(inp.dtype)


def _check_affine(out: torch.Tensor, count: torch.Tensor, p: int) -> None:
    """Where no boundary was seen, f must be affine over the polytope (module docstring)."""
    centre, plus, minus = out[:, 0], out[:, 1 : 1 + p], out[:, 1 + p :]
    gap = (plus + minus - 2 * centre[:, None]).abs().amax(dim=(1, 2))
    scale = out.abs().amax(dim=(1, 2)).clamp_min(torch.finfo(out.dtype).tiny)
    tol = 1e-9 if out.dtype == torch.float64 else 1e-3
    if ((count == 0) & (gap > tol * scale)).any():
        raise InputError(
            "local_complexity: the network is not affine where no nonlinearity module changes "
            "state; it has nonlinearities module hooks cannot see (e.g. torch.relu in forward)"
        )


@register_metric("local_complexity", needs="model", opt_in=True, bounds=(0, math.inf))
def local_complexity_metric(q: Quantities):
    """Linear-region boundaries crossing a cross-polytope of radius 0.05|x| around x
    (Humayun et al. 2024; 8 random directions, seeded). Opt-in."""
    return local_complexity(q.f, q.inp, module=q.module)
