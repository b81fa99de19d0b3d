"""Linear regions of a piecewise-linear network, read from its activation patterns.

A network built from affine layers and the nonlinearities below is continuous piecewise affine
(paper section 2.1): inputs with the same activation pattern lie in one linear region (a convex
polytope), where f(x) = A x + b. The pattern of a nonlinearity module is read from its input z
(a forward pre-hook, so in-place activations do not hide it), flattened to (N, units):

- ReLU, LeakyReLU, PReLU: [z > 0], the side of each neuron's hyperplane;
- Hardtanh (and ReLU6): [z > min_val] + [z > max_val], its two kinks;
- MaxPool1d/2d/3d: the argmax index of every window.

Nonlinearities not listed (tanh, GELU, softplus, functional calls such as ``torch.relu``) have
no finite partition or are invisible to module hooks; :func:`scan` names the known smooth ones,
and callers check affinity at run time (:func:`regions_on_slice` does, on the grid).

A region id is a 128-bit hash of the whole pattern: two independent sums
sum_u p_u R_u (mod 2^64) over every unit u with random odd int64 multipliers R_u (seeded), so
equal patterns always get equal ids (integer arithmetic is exact and order-free) and two
different patterns share one with probability ~2^-126.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from alignctl.errors import InputError

PIECEWISE_LINEAR = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Hardtanh,
                    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)  # fmt: skip
SMOOTH = (nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.Softplus, nn.ELU, nn.CELU, nn.SELU,
          nn.Mish, nn.Hardswish, nn.Softmax, nn.LogSoftmax, nn.Softsign, nn.Tanhshrink)  # fmt: skip
_POOL = {nn.MaxPool1d: torch.nn.functional.max_pool1d, nn.MaxPool2d: torch.nn.functional.max_pool2d,
         nn.MaxPool3d: torch.nn.functional.max_pool3d}  # fmt: skip


def scan(model: nn.Module) -> tuple[list[nn.Module], list[str]]:
    """(piecewise-linear nonlinearity modules, names of the smooth ones), in module order."""
    pl = [m for m in model.modules() if isinstance(m, PIECEWISE_LINEAR)]
    smooth = sorted({type(m).__name__ for m in model.modules() if isinstance(m, SMOOTH)})
    return pl, smooth


def pattern(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The activation pattern of ``module`` at its input z (N, ...): (N, units) int64."""
    n = z.shape[0]
    if isinstance(module, nn.Hardtanh):
        p = (z > module.min_val).long() + (z > module.max_val).long()
    elif isinstance(module, (nn.ReLU, nn.LeakyReLU, nn.PReLU)):
        p = (z > 0).long()
    else:  # max-pool: which element of each window wins
        pool = _POOL[type(module)]
        _, p = pool(z, module.kernel_size, module.stride, module.padding, module.dilation,
                    ceil_mode=module.ceil_mode, return_indices=True)  # fmt: skip
    return p.reshape(n, -1)


@contextlib.contextmanager
def record_patterns(
    model: nn.Module, callback: Callable[[int, nn.Module, torch.Tensor], None]
) -> Iterator[int]:
    """While active, every forward pass calls ``callback(k, module, pattern (N, units))`` for
    the k-th piecewise-linear module; yields how many modules are hooked."""
    modules, _ = scan(model)
    handles = [
        m.register_forward_pre_hook(lambda mod, args, k=k: callback(k, mod, pattern(mod, args[0])))
        for k, m in enumerate(modules)
    ]
    try:
        yield len(modules)
    finally:
        for h in handles:
            h.remove()


class PatternHash:
    """Accumulates the 128-bit pattern hash of a batch, (N, 2) int64 (module docstring)."""

    def __init__(self, seed: int = 0):
        self.gen = torch.Generator().manual_seed(seed)
        self.mult: dict[tuple[int, int], torch.Tensor] = {}
        self.value: torch.Tensor | None = None

    def _multipliers(self, k: int, units: int) -> torch.Tensor:
        if (k, units) not in self.mult:  # drawn once per module, in module order: deterministic
            r = torch.randint(-(2**62), 2**62, (units, 2), generator=self.gen, dtype=torch.int64)
            self.mult[(k, units)] = r * 2 + 1  # odd, so no unit is ignored modulo 2^64
        return self.mult[(k, units)]

    def __call__(self, k: int, module: nn.Module, p: torch.Tensor) -> None:
        r = self._multipliers(k, p.shape[1]).to(p.device)
        # (N, U, 2) products would be big; two int64 sums wrap modulo 2^64 exactly
        h = torch.stack([(p * r[:, 0]).sum(1), (p * r[:, 1]).sum(1)], dim=1)
        self.value = h if self.value is None else self.value * 1000003 + h


@dataclass
class SlicePartition:
    """The partition of the plane x(a, b) = x_i + a (x_j - x_i) + b (x_k - x_i).

    a, b: (R,) grid coordinates; region: (R, R) int64 region ids (row = b, column = a), -1 when
    the network is not piecewise linear; label: (R, R) argmax class (scalar outputs: [f > 0]);
    piecewise_linear: whether ``region`` is exact; note: why not, if not.
    """

    a: torch.Tensor
    b: torch.Tensor
    region: torch.Tensor
    label: torch.Tensor
    piecewise_linear: bool
    note: str = ""

    @property
    def n_regions(self) -> int:
        return int(self.region.unique().numel()) if self.piecewise_linear else 0


def plane_points(x3: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x(a, b) for every grid point, (len(b) * len(a), *x.shape[1:]), row-major in (b, a)."""
    bb, aa = torch.meshgrid(b, a, indexing="ij")
    return _points_at(x3, aa.reshape(-1), bb.reshape(-1))


def _forward_fn(model):
    """(function of the differentiated input, map from raw inputs to it): token models are
    sliced in their embedding space, as their Jacobians are taken (geometry.measure)."""
    if hasattr(model, "forward_embedded") and hasattr(model, "embed"):
        return model.forward_embedded, lambda x: model.embed(x).detach()
    return model, lambda x: x


def _affine_inside_regions(region: torch.Tensor, out: torch.Tensor) -> bool:
    """Second differences of the outputs along a and b vanish wherever three consecutive grid
    points share a region (f is affine there); out (R, R, C) float64."""
    scale = out.abs().max().clamp_min(1e-300)
    for dim in (0, 1):
        r0, r1, r2 = (region.narrow(dim, s, region.shape[dim] - 2) for s in range(3))
        o0, o1, o2 = (out.narrow(dim, s, out.shape[dim] - 2) for s in range(3))
        same = (r0 == r1) & (r1 == r2)
        second = (o0 - 2 * o1 + o2).abs().amax(-1)
        if (second[same] > 1e-7 * scale).any():
            return False
    return True


def regions_on_slice(
    model: nn.Module, x3: torch.Tensor, *, resolution: int = 300, pad: float = 0.3,
    batch_size: int = 4096, seed: int = 0,
) -> SlicePartition:  # fmt: skip
    """Linear regions and decision regions on the slice through three inputs x3 (3, ...).

    The grid has ``resolution`` points per side over a, b in [-pad, 1 + pad]; it is evaluated
    in float64 in batches of ``batch_size`` points. Raises InputError for fewer than three
    distinct, affinely independent inputs.
    """
    if x3.shape[0] != 3:
        raise InputError(f"a slice needs exactly three inputs, got {x3.shape[0]}")
    model = _as_float64(model)
    f, lift = _forward_fn(model)
    with torch.no_grad():
        x3 = lift(x3).double()
        u, v = (x3[1] - x3[0]).reshape(-1), (x3[2] - x3[0]).reshape(-1)
        if torch.linalg.matrix_rank(torch.stack([u, v]), rtol=1e-6) < 2:
            raise InputError("the three samples lie on one line: they span no plane")
        grid = torch.linspace(-pad, 1 + pad, resolution, dtype=torch.float64)
        _, smooth = scan(model)
        hashes, outs = [], []
        for start in range(0, resolution * resolution, batch_size):
            # points made per batch: the whole grid of (R^2, d) inputs need not fit in memory
            flat = torch.arange(start, min(start + batch_size, resolution * resolution))
            chunk = _points_at(x3, grid[flat % resolution], grid[flat // resolution])
            hasher = PatternHash(seed)
            with record_patterns(model, hasher) as n_modules:
                outs.append(_outputs(f(chunk)))
            hashes.append(hasher.value if n_modules else torch.zeros(len(chunk), 2).long())
        out = torch.cat(outs).reshape(resolution, resolution, -1)
        label = (out[..., 0] > 0).long() if out.shape[-1] == 1 else out.argmax(-1)
        region = torch.unique(torch.cat(hashes), dim=0, return_inverse=True)[1]
        region = region.reshape(resolution, resolution)
    note = ""
    if smooth:
        note = f"not piecewise linear ({', '.join(smooth)})"
    elif not _affine_inside_regions(region, out):
        note = "not piecewise linear (nonlinearities that are not nn modules)"
    if note:
        region = torch.full_like(region, -1)
    return SlicePartition(grid, grid, region, label, not note, note)


def _points_at(x3: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x(a_n, b_n) for paired coordinates a, b (N,): (N, *x.shape[1:])."""
    shape = (-1,) + (1,) * (x3.dim() - 1)
    return x3[0] + a.reshape(shape) * (x3[1] - x3[0]) + b.reshape(shape) * (x3[2] - x3[0])


def _outputs(out: torch.Tensor) -> torch.Tensor:
    return out.reshape(out.shape[0], -1)


def _as_float64(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).double().eval()


def plane_coordinates(x3: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Least-squares coordinates (a, b) of vectors (m, d) in the basis (x_j - x_i, x_k - x_i)
    of the slice: the projection of each vector onto the plane, (m, 2)."""
    flat = x3.reshape(3, -1).double()
    basis = torch.stack([flat[1] - flat[0], flat[2] - flat[0]], dim=1)  # (d, 2)
    return torch.linalg.lstsq(basis, vectors.double().T).solution.T
