"""Classification losses of the paper's setups, and accuracy for both label conventions.

``out`` is (n, C), or (n,) / (n, 1) for scalar-output binary models whose labels are
{-1, +1} or {0, 1}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignctl.registry import Registry

LOSSES: Registry = Registry("loss")
register_loss = LOSSES.register


def _scalar(out: torch.Tensor) -> bool:
    return out.dim() == 1 or out.shape[-1] == 1


def signed_labels(y: torch.Tensor) -> torch.Tensor:
    """{0, 1} or {-1, +1} labels as float +-1 (positive label -> +1)."""
    return torch.where(y > 0, 1.0, -1.0)


def predictions(out: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Argmax for C > 1; for scalar outputs the sign, in the labels' own convention."""
    if not _scalar(out):
        return out.argmax(dim=-1)
    positive = out.reshape(-1) > 0
    negative = -1 if y is not None and bool((y < 0).any()) else 0
    return torch.where(positive, 1, negative)


def n_correct(out: torch.Tensor, y: torch.Tensor) -> int:
    """How many predictions are correct (scalar outputs: sign(f) equals the label's sign)."""
    if _scalar(out):
        correct = (out.reshape(-1) > 0) == (y > 0)
    else:
        correct = out.argmax(dim=-1) == y
    return int(correct.sum())


def accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of correct predictions, k / n exactly (the double nearest it): an integer
    count, not a float32 mean, whose rounding depends on the device's reduction order (a CUDA
    mean of 30 flags gave 0.40000004 where the CPU gave 0.4)."""
    return n_correct(out, y) / len(y) if len(y) else float("nan")


def _needs_classes(out: torch.Tensor, name: str) -> None:
    if _scalar(out):
        from alignctl.errors import InputError

        raise InputError(
            f"loss {name} needs one output per class (C >= 2); the model has a scalar output: "
            "use logistic or mse"
        )


@LOSSES.register("cross_entropy")
def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log softmax(f)_y, batch mean."""
    _needs_classes(out, "cross_entropy")
    return F.cross_entropy(out, y)


@LOSSES.register("mse")
def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared error against one-hot targets, summed over classes, batch mean (scalar
    outputs: against the +-1 label)."""
    if _scalar(out):
        return (out.reshape(-1) - signed_labels(y).to(out)).pow(2).mean()
    target = F.one_hot(y, out.shape[-1]).to(out)
    return (out - target).pow(2).sum(-1).mean()


@LOSSES.register("stablemax")
def stablemax(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """StableMax cross-entropy: s(x) = x + 1 for x >= 0, 1 / (1 - x) otherwise;
    loss = -log(s(f)_y / sum_c s(f)_c), computed in float64 (SETUPS.md)."""
    _needs_classes(out, "stablemax")
    z = out.double()
    s = torch.where(z >= 0, z + 1, 1 / (1 - torch.where(z >= 0, torch.zeros_like(z), z)))
    logp = s.gather(-1, y.unsqueeze(-1)).squeeze(-1).log() - s.sum(-1).log()
    return (-logp.mean()).to(out.dtype)


@LOSSES.register("logistic")
def logistic(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean softplus(-y f) for scalar outputs and labels +-1 (or {0, 1}); InputError for an
    (n, C) output with C >= 2 (one score per class has no sign to compare)."""
    if not _scalar(out):
        from alignctl.errors import InputError

        raise InputError(
            f"loss logistic needs a scalar output (n,) or (n, 1); the model has {out.shape[-1]} "
            "outputs: use cross_entropy, stablemax or mse"
        )
    return F.softplus(-signed_labels(y).to(out) * out.reshape(-1)).mean()


def get_loss(name: str):
    return LOSSES.get(name)
