"""Divergence: a training loss, evaluation loss or weight that is NaN or infinite.

Checking a loss on the host every step would stall an accelerator once per step, so the step
only records, on the device, the first step whose loss was not finite (two tiny tensor ops,
no synchronisation); :meth:`check_divergence` reads that record at the points where the loop
stops anyway (every ``CHECK_EVERY`` steps, each epoch's end, each evaluation and before each
save) and, there, also checks every floating-point weight and buffer of the model. The
evaluation loss is already a Python float, so checking it costs nothing.

A diverged run (``train.on_nan: stop``, the default) stops at the next check point without
saving the non-finite weights; with ``on_nan: continue`` it trains on. Either way run.json says
``status: diverged`` with the step and the reason, and an evaluation of a non-finite model
reports no accuracy (``null``): ``argmax`` of NaN outputs is not a prediction.
"""

from __future__ import annotations

import math

import torch

from alignctl.runs.config import ON_NAN

CHECK_EVERY = 256  # steps between device reads inside long epochs
__all__ = ["CHECK_EVERY", "ON_NAN", "DivergenceMixin", "divergence_key", "divergence_of"]


def _word(v: float) -> str:
    return "nan" if math.isnan(v) else "inf" if v > 0 else "-inf"


class DivergenceMixin:
    """Needs ``model``, ``step`` and ``diverged`` (None or ``{"step", "reason"}``)."""

    _bad_step: torch.Tensor | None = None  # first step (1-based) whose loss was not finite
    _bad_value: torch.Tensor | None = None

    def _track_loss(self, loss: torch.Tensor) -> None:
        """Record, without a host sync, whether the loss of step ``self.step + 1`` is finite."""
        loss = loss.detach()
        if self._bad_step is None:
            self._bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._bad_value = torch.zeros((), dtype=loss.dtype, device=loss.device)
        first = (self._bad_step < 0) & ~torch.isfinite(loss)
        self._bad_step = torch.where(first, self.step + 1, self._bad_step)
        self._bad_value = torch.where(first, loss, self._bad_value)

    def nonfinite_model(self, eval_loss: float | None = None) -> str | None:
        """Why the current model is not finite (its evaluation loss or a weight), else None."""
        tensors = [(k, v) for k, v in self.model.state_dict().items() if v.is_floating_point()]
        ok = torch.stack([torch.isfinite(v).all() for _, v in tensors]) if tensors else None
        if ok is not None and not bool(ok.all()):  # one host read for the whole model
            bad = [k for (k, _), good in zip(tensors, ok.tolist(), strict=True) if not good]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            return f"the weight {bad[0]}{more} holds NaN or inf"
        if eval_loss is not None and not math.isfinite(eval_loss):  # finite but huge weights
            return f"the evaluation loss is {_word(eval_loss)}"
        return None

    def check_divergence(self, model_reason: str | None = None, scan: bool = True) -> dict | None:
        """Record and return the first divergence (``{"step", "reason"}``) or None.
        ``model_reason``: what :meth:`nonfinite_model` already found; ``scan``: look at the
        weights when nothing else is known."""
        if self.diverged is not None:
            return self.diverged
        found = None
        if self._bad_step is not None:
            s = int(self._bad_step)  # the one device read
            if s >= 0:
                value = _word(float(self._bad_value))
                found = {"step": s, "reason": f"the training loss of step {s} is {value}"}
        if found is None and model_reason is None and scan:
            model_reason = self.nonfinite_model()
        if found is None and model_reason is not None:
            found = {"step": self.step, "reason": f"{model_reason} at step {self.step}"}
        self.diverged = self._agree_divergence(found)
        return self.diverged

    def _agree_divergence(self, found: dict | None) -> dict | None:
        """What every process of the run takes as the divergence: one process, its own
        (:class:`alignctl.train.ddp.DDPTrainer` makes the ranks agree)."""
        return found


_NONE = 2**62  # "no divergence" in a key all-reduced over ranks (alignctl.train.ddp)
_WORDS = ("nan", "inf", "-inf")


def divergence_key(found: dict | None) -> int:
    """A divergence (``{"step", "reason"}``, :class:`alignctl.train.divergence.DivergenceMixin`)
    as an integer that sorts as one process decides: by step; at the same step a training loss
    before a weight; a NaN loss before an infinite one (a batch holding both sums to NaN).
    None: a key above every divergence."""
    if found is None:
        return _NONE
    loss = found["reason"].startswith("the training loss")
    word = next((i for i, w in enumerate(_WORDS) if found["reason"].endswith(f" is {w}")), 0)
    return int(found["step"]) * 16 + (word if loss else 4)


def divergence_of(key: int) -> dict | None:
    """The divergence a key stands for (a weight's with a generic reason)."""
    if key >= _NONE:
        return None
    step, rest = divmod(key, 16)
    if rest < 4:
        return {"step": step, "reason": f"the training loss of step {step} is {_WORDS[rest]}"}
    return {"step": step, "reason": f"a weight holds NaN or inf at step {step}"}
