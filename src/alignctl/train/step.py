"""One optimisation step of the Trainer: the batch order, the forward pass (differentiated at the
embedding for token models), the loss plus regulariser penalties, backward and the update.

Regularisers hook in at three points (``transform_batch``, ``penalty``, ``after_backward``;
:class:`alignctl.train.regularisers.Regulariser`), so a new one is a single file.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from alignctl.errors import InputError
from alignctl.geometry.devices import twice_differentiable
from alignctl.geometry.transfer import to_device


class StepMixin:
    """Needs ``model``, ``regs``, ``loss_fn``, ``opt``, ``params``, ``x``, ``cfg``, ``gen``,
    ``device``, ``perm``, ``batch_index`` and ``step`` (set by :class:`Trainer`) and
    ``_track_loss`` (:class:`alignctl.train.divergence.DivergenceMixin`)."""

    def _forward(self, xb, input_grad: bool):
        """(differentiable input, logits) of the batch (the DDP trainer goes through its
        DistributedDataParallel wrapper here)."""
        return self.front.forward_train(xb, input_grad)

    def train_step(self, xb, yb) -> torch.Tensor:
        """One step on the batch; returns the loss (penalties included) as a detached tensor:
        no host sync here (divergence is checked at the loop's check points)."""
        self.model.train()
        for r in self.regs:
            xb = r.transform_batch(self.model, xb, yb, self.loss_fn)
        loss = step_loss(self.model, self.front, self.regs, self.loss_fn, xb, yb,
                         forward=self._forward, chain=self.chain)  # fmt: skip
        self._track_loss(loss)
        self.opt.zero_grad(set_to_none=True)
        self._backward(loss)
        for r in self.regs:
            r.after_backward(self.model)
        self.opt.step()
        self.step += 1
        return loss.detach()

    def _backward(self, loss: torch.Tensor) -> None:
        loss.backward(inputs=self.params)  # not x.grad: the step's largest unused product

    def batches_per_epoch(self) -> int:
        n = self.x.shape[0]
        return -(-n // (self.cfg.train.get("batch_size") or n))

    def _batches(self):
        n, bs = self.x.shape[0], self.cfg.train.get("batch_size") or self.x.shape[0]
        if self.perm is None:  # a new epoch: its order comes from the data generator
            self.perm = torch.randperm(n, generator=self.gen) if bs < n else torch.arange(n)
            self.batch_index = 0
        starts = list(range(0, n, bs))
        while self.batch_index < len(starts):
            idx = self.perm[starts[self.batch_index] : starts[self.batch_index] + bs]
            self.batch_index += 1
            yield to_device(idx, self.device)  # CUDA: pinned, non-blocking (no stall)
        self.perm = None


def step_loss(model, front, regs, loss_fn, xb, yb, *, forward=None, chain=None) -> torch.Tensor:
    """The loss of one batch plus every regulariser's penalty, differentiable in the weights.

    The forward pass is differentiated at the input (the embedding for token models,
    :meth:`alignctl.geometry.inputs.ModelFront.forward_train`) when a penalty needs it. A
    regulariser whose ``penalty_rows`` names a subset of the batch (GrokAlign's
    ``subsample``) gets its own forward pass of those rows, differentiable at their input,
    so its penalty's cost scales with the subset, not the batch; the loss is unchanged.
    ``forward(xb, input_grad)`` runs the batch's own pass (default ``front.forward_train``;
    the DDP trainer's goes through DistributedDataParallel, whose gradient hooks on the
    parameters then also carry the subset pass's contribution). ``chain``: the model as a
    :class:`alignctl.train.relu_chain.ReluChain` (a ReLU MLP), or None: when every penalty
    can be taken through it (``uses_chain``) and the model is still that MLP (``intact``: no
    hook added since), the batch is forwarded once, not differentiated at the input, and no
    double backward is needed.
    """
    forward = forward or front.forward_train
    rows = [r.penalty_rows(xb.shape[0], xb.device) for r in regs]  # drawn before any forward
    penalised = [r for r in regs if _overrides(r, "penalty")]
    if not penalised:
        inp, out = forward(xb, False)
        return loss_fn(out, yb)
    if chain is not None and all(r.uses_chain() for r in penalised) and chain.intact():
        return _chain_loss(chain, front, regs, loss_fn, xb, yb, rows)
    # penalties differentiate input gradients: attention must be twice differentiable
    with twice_differentiable():
        return _penalised_loss(model, front, regs, loss_fn, xb, yb, rows, forward)


def _penalised_loss(model, front, regs, loss_fn, xb, yb, rows, forward) -> torch.Tensor:
    # a step on which no whole-batch penalty is due (GrokAlign's every=k) needs no input graph
    whole = any(
        _overrides(r, "penalty") and i is None and r.penalty_due()
        for r, i in zip(regs, rows, strict=True)
    )
    inp, out = forward(xb, whole)
    loss = loss_fn(out, yb)
    for r, idx in zip(regs, rows, strict=True):
        if idx is None:
            pen = r.penalty(model, inp, out, yb)
        else:
            with buffers_kept(model):
                sub_inp, sub_out = front.forward_train(xb[idx], True)
            pen = r.penalty(model, sub_inp, sub_out, yb[idx])
        if pen is not None:
            loss = loss + pen
    return loss


@contextmanager
def buffers_kept(model):
    """A forward pass whose writes to the model's buffers are discarded: the penalty's own pass
    over a subset of the batch is no training step, so BatchNorm's running statistics (and
    ``num_batches_tracked``) must move once per step, by the batch, as without the penalty.
    Writes go to copies (in place or by assignment); the module keeps its own tensors, which
    the batch's graph may have saved. Costs one copy of the buffers per penalised step."""
    saved = [(m, k, b) for m in model.modules() for k, b in m._buffers.items() if b is not None]
    for m, k, b in saved:
        m._buffers[k] = b.clone()
    try:
        yield
    finally:
        for m, k, b in saved:
            m._buffers[k] = b


def _chain_loss(chain, front, regs, loss_fn, xb, yb, rows) -> torch.Tensor:
    """The loss and the penalties of a ReLU MLP's batch through its chain: one forward pass
    (the masks recorded), the penalties from weight products (first-order backward only)."""
    out = front.logits(chain.forward(front.cast(xb)))
    loss = loss_fn(out, yb)
    for r, idx in zip(regs, rows, strict=True):
        if not _overrides(r, "penalty"):
            continue
        part = xb if idx is None else xb[idx]
        pen = r.chain_penalty(chain, out, idx, lambda part=part: front.forward_train(part, True))
        if pen is not None:
            loss = loss + pen
    return loss


def _overrides(obj, method: str) -> bool:
    from alignctl.train.regularisers import Regulariser

    return getattr(type(obj), method) is not getattr(Regulariser, method)


def ignored_optimizer_settings(spec: dict) -> list[str]:
    """Notes for settings of the other optimiser that ``spec`` gives away from their defaults
    (``momentum`` with AdamW, ``betas`` with SGD): the config accepts both keys for every
    optimiser (a resolved alignctl.yaml lists them all), but only one of them is used."""
    from alignctl.runs.config import OPTIMIZER_DEFAULTS

    name = spec.get("name", "adamw").lower()
    other = {"adamw": "momentum", "sgd": "betas"}.get(name)
    value = spec.get(other, OPTIMIZER_DEFAULTS.get(other))
    if other is None or _plain(value) == _plain(OPTIMIZER_DEFAULTS[other]):
        return []
    return [f"train.optimizer.{other} = {spec[other]} is not a setting of {name}: it is ignored"]


def _plain(v):
    return [float(b) for b in v] if isinstance(v, (list, tuple)) else float(v)


def build_optimizer(params, spec: dict) -> torch.optim.Optimizer:
    name = spec.get("name", "adamw").lower()
    if name == "adamw":
        return torch.optim.AdamW(
            params, lr=spec["lr"], weight_decay=spec.get("weight_decay", 0.0),
            betas=tuple(spec.get("betas", (0.9, 0.999))),
        )  # fmt: skip
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=spec["lr"], weight_decay=spec.get("weight_decay", 0.0),
            momentum=spec.get("momentum", 0.0),
        )  # fmt: skip
    raise InputError(f"unknown optimizer {name!r}; valid: adamw, sgd")
