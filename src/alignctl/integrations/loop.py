"""The training loop's side of a measurement: the state it must get back (the random number
generators, each submodule's train/eval mode) and the steps it counts (:class:`Every`), shared
by the monitor and both framework callbacks (:mod:`alignctl.integrations.probe`)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import torch

from alignctl.errors import InputError, short


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore the global RNGs on exit (torch CPU, every CUDA device once CUDA is initialised,
    Python ``random``, NumPy's global generator), whatever happens inside."""
    import numpy as np

    cpu, py, npy = torch.get_rng_state(), random.getstate(), np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        random.setstate(py)
        np.random.set_state(npy)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def keeps_rng(fn):
    """``fn`` run under :func:`preserved_rng`: a call into the monitor or a callback (its
    construction too: a model built to check ``model_config`` draws its initial weights, a
    lazy import may draw) never changes the random numbers the training loop draws next."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with preserved_rng():
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def preserved_state(model: torch.nn.Module) -> Iterator[None]:
    """Restore the RNGs and every submodule's mode on exit, whatever happens inside."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        with preserved_rng():
            yield
    finally:
        for m, training in modes:
            m.training = training


def positive_int(value, name: str) -> int:
    """``value`` if it is a positive int (not a bool), else InputError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, not {short(value)}")
    return value


MAX_STEP = 2**63 - 1  # what a log line may hold (monitor_log reads steps in [0, 2**63 - 1])


def as_step(value) -> int:
    """A training step: an integer (a Python, NumPy or 0-d torch integer) in [0, 2**63 - 1];
    else InputError (a log line with another step would be skipped by every reader)."""
    import operator

    try:
        step = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        step = None
    if step is None or not 0 <= step <= MAX_STEP:
        raise InputError(f"step must be an integer in [0, 2**63 - 1], not {short(value)}")
    return step


class Every:
    """When to measure: at a first step that is a multiple of ``every`` (step 0 included), then
    whenever the step reaches the next multiple, even if it jumps past it (Lightning's
    ``global_step`` counts each optimizer of a manual-optimization step; a loop may count
    samples). A step seen again is not due (gradient accumulation)."""

    def __init__(self, every: int, name: str = "every") -> None:
        self.every = positive_int(every, name)
        self.last: int | None = None  # the last step measured

    def due(self, step: int) -> bool:
        """Whether ``step`` is due; the caller sets :attr:`last` when it measures."""
        if self.last is None:
            return step % self.every == 0
        return step // self.every > self.last // self.every
