"""Per-sample Jacobian metrics, one registry entry each (paper sections 2-3).

A metric is a function of a :class:`Quantities` bundle that returns one value per sample,
shape ``(n,)``. It declares what it ``needs``, so :func:`alignctl.measure` computes only that:

- ``"centroid"``: the centroid mu = J^T 1, one vector-Jacobian product per batch;
- ``"label"``: the label's row J_y, one vector-Jacobian product per batch (needs labels);
- ``"jacobian"``: the full Jacobian J, C vector-Jacobian products per batch;
- ``"model"``: the network itself (``q.f``, applied to ``q.inp``, the chunk as the network
  takes it), for metrics that probe a neighbourhood rather than differentiate.

An ``opt_in`` metric is computed only when named (not by default, not in ``full``).

``labels=True`` marks a metric that also reads the labels y (the ``"label"`` ones always do).

Add a metric by writing one module that calls :func:`register_metric`; the test suite then
requires a brute-force reference for it (``tests/test_geometry.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from alignctl.errors import InputError
from alignctl.geometry.arguments import flags
from alignctl.registry import Registry

NEEDS = ("centroid", "label", "jacobian", "model")


@dataclass(frozen=True)
class Metric:
    name: str
    needs: str
    fn: Callable[[Quantities], torch.Tensor]
    doc: str
    labels: bool = False
    opt_in: bool = False
    # the values the metric can take (a cosine: [-1, 1]): a CI gate outside them could only
    # fail or never fail (report.gates refuses it)
    bounds: tuple[float, float] = (-math.inf, math.inf)

    @property
    def needs_labels(self) -> bool:
        return self.labels or self.needs == "label"


METRICS: Registry[Metric] = Registry("metric")


def register_metric(
    name: str, needs: str, labels: bool = False, *, opt_in: bool = False,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> Callable:  # fmt: skip
    """Decorator: ``@register_metric("centroid_alignment", needs="centroid",
    bounds=(-1, 1))``; ``bounds``: the closed range of its values (default: any real)."""
    if not isinstance(needs, str) or needs not in NEEDS:
        shown = repr(needs)[:80] if isinstance(needs, str) else type(needs).__name__
        raise InputError(f"needs must be one of {', '.join(NEEDS)}, not {shown}")
    flags(labels=labels, opt_in=opt_in)
    pair = isinstance(bounds, tuple | list) and len(bounds) == 2
    if not pair or not all(_real(b) for b in bounds) or not bounds[0] <= bounds[1]:
        shown = (
            bounds if pair and all(isinstance(b, float) for b in bounds) else type(bounds).__name__
        )
        raise InputError(f"bounds must be (low, high), numbers with low <= high (+-math.inf for "
                         f"none), not {shown}")  # fmt: skip
    METRICS.register(name)  # the name is checked before a function is decorated

    def deco(fn: Callable[[Quantities], torch.Tensor]) -> Callable:
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        METRICS.register(name)(Metric(name, needs, fn, doc, labels, opt_in, tuple(bounds)))
        return fn

    return deco


def _real(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v  # not NaN


def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den elementwise, 0 where den is 0 (cosines with a zero vector, an all-zero J)."""
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, num / safe, torch.zeros_like(den))


from alignctl.geometry.metrics.quantities import Quantities  # noqa: E402


def _load_builtin() -> None:
    from alignctl.geometry.metrics import (  # noqa: F401  (they register themselves)
        centred,
        centroid,
        label,
        local_complexity,
        spectrum,
    )


_load_builtin()
