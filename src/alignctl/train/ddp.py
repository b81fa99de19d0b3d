"""``torchrun --nproc-per-node N -m alignctl train ...``: one run trained by N processes with
torch's DistributedDataParallel (gloo on CPU, NCCL on CUDA; the group is the one
:func:`alignctl.report.distributed.join` starts, and rank 0 starts every rank's part through
its ``Group.map``).

**The batches.** Every rank draws one process's global permutation and takes a contiguous
block of each global batch of B: rank r of N gets ``idx[B r // N : B (r + 1) // N]``. Batch
size, epochs and steps are one process's; full-batch presets split the full batch.

**The gradient.** DDP averages the ranks' gradients during ``backward()``. Rank r's loss is
scaled by ``w_r = N B_r / B`` (1.0, no multiplication at all, when the shares are equal), so
the average is (1/N) sum_r (N B_r / B) grad L_r = (1/B) sum_i grad l_i: the gradient of the
single-process batch mean, for any B and N (the last batch of an epoch too). The same holds
for a penalty that is a per-sample mean over the local batch, GrokAlign's (mean over the
samples of sqrt(C |v^T J|^2)): rank r's penalty is (1/B_r) sum_{i in r} p_i, and the weighted
average of the ranks' gradients is (1/B) sum_i grad p_i, the single-process penalty's
gradient; and for a penalty of the weights alone (the same on every rank) it is
sum_r (B_r / B) grad P = grad P. Only the float summation order differs (B_r terms per rank,
then N partial sums, instead of B terms): equal up to rounding. GrokAlign's random
projections are drawn per sample, so each rank draws its own samples' (equal in
distribution, not the same numbers: ``n_proj=exact`` is deterministic and equal).
Gradient filters (Grokfast, ⊥Grad; ``after_backward``) run after ``backward()`` returns, when
DDP has already written the averaged gradient into every ``.grad`` (its reducer waits for the
last all-reduce before backward ends), so they filter the single-process gradient, identical
on every rank, and their state (Grokfast's running average) stays identical too. Models with
batch statistics (BatchNorm in training mode) see each rank's share only, as in any DDP run.

**Randomness.** Each step reseeds torch's generator from (seed, step, rank): dropout and the
projections differ between ranks, and a resumed run draws what an uninterrupted one draws.

**Files and agreement.** Rank 0 alone evaluates and writes the run folder. What changes the
loop's path is agreed on a gloo group: rank 0's evaluations and the outcome of its writes
(a full disk stops every rank at once), the earliest divergence on any rank, Ctrl-C on any
rank. Resume: rank 0 reads the checkpoint and broadcasts its state; DDP broadcasts its weights.
The state does not depend on N: a run resumes with any number of processes. A rank failing
mid-training (out of memory) leaves the others in the next all-reduce until
``ALIGNCTL_DIST_TIMEOUT``; a failure while starting is one error on every rank, met before
rank 0 writes anything (:mod:`alignctl.train.ddp_start`).
"""

from __future__ import annotations

import hashlib
import signal
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from alignctl.errors import InputError
from alignctl.train.divergence import divergence_key, divergence_of
from alignctl.train.state import tensors_to
from alignctl.train.trainer import Trainer


class PeerFailed(Exception):
    """This rank stops because another rank failed (rank 0 reports that rank's error)."""


@dataclass
class Share:
    """What every rank needs to join rank 0's run (picklable)."""

    run_dir: Path
    cfg: object
    device: str
    threads: int
    epochs: int
    fit: dict = field(default_factory=dict)


class DDPTrainer(Trainer):
    """One rank of a distributed run: ``DDPTrainer(run_dir, cfg, device, rank=r, size=N)``."""

    def __init__(self, run_dir, cfg, device="auto", *, rank: int, size: int) -> None:
        from alignctl.geometry.devices import resolve_device

        self.rank, self.size = rank, size  # before Trainer's checks of a share (_rows)
        dev = resolve_device(device)
        # on CUDA: torchrun's LOCAL_RANK, made current by the group's start (Trainer names it)
        if dev.type == "cuda" and dev.index not in (None, torch.cuda.current_device()):
            raise InputError(f"--device {device} under torchrun: each rank trains on its "
                             "own GPU (LOCAL_RANK); use --device cuda")  # fmt: skip
        elif dev.type not in ("cpu", "cuda"):
            raise InputError(f"training under torchrun runs on cpu or cuda, not {dev.type}")
        super().__init__(run_dir, cfg, dev)
        self.ddp = self.ctrl = self._pending = None
        self._weight = 1.0
        self.chain = None  # the forward pass must go through the DDP wrapper

    # -- joining: every rank together ------------------------------------------------------
    def attach(self, ctrl) -> None:
        """Rank 0's resume state to every rank, then the DDP wrapper (which broadcasts rank
        0's weights and buffers and checks that every rank's model has the same shapes)."""
        from torch.nn.parallel import DistributedDataParallel

        self.ctrl = ctrl
        box = [tensors_to({**self.run_state(), "saved": self.last_saved_step}, "cpu")
               if self.rank == 0
               else None]  # fmt: skip
        dist.broadcast_object_list(box, src=0, group=ctrl)
        if self.rank != 0:
            self.load_run_state(box[0])
            self.last_saved_step = box[0]["saved"]
        cuda = self.device.type == "cuda"
        native = dist.get_backend() == ("nccl" if cuda else "gloo")
        self.ddp = DistributedDataParallel(
            _TrainForward(self.front), device_ids=[self.device.index] if cuda else None,
            process_group=None if native else ctrl, find_unused_parameters=self._unused(),
        )  # fmt: skip

    def _unused(self) -> bool:
        """Whether a trainable parameter gets no gradient from the loss (DDP must then look
        for unused parameters every step): one sample, eval mode, nothing accumulated."""
        from alignctl.geometry.devices import eval_mode

        with eval_mode(self.model):
            _, out = self.front.forward_train(self.x[:1], False)
            grads = torch.autograd.grad(self.loss_fn(out, self.y[:1]), self.params,
                                        allow_unused=True)  # fmt: skip
        return any(g is None for g in grads)

    # -- the step ---------------------------------------------------------------------------
    def _batches(self):
        for idx in super()._batches():
            n = len(idx)
            lo, hi = n * self.rank // self.size, n * (self.rank + 1) // self.size
            self._weight = self.size * (hi - lo) / n
            # no sample for this rank (a batch smaller than N): one with weight 0, so that
            # every parameter still takes part in the all-reduce
            yield idx[lo:hi] if hi > lo else idx[:1]

    def train_step(self, xb, yb) -> torch.Tensor:
        torch.manual_seed(_step_seed(int(self.cfg.train["seed"]), self.step, self.rank))
        return super().train_step(xb, yb)

    def _forward(self, xb, input_grad: bool):
        return self.ddp(xb, input_grad)

    def _backward(self, loss: torch.Tensor) -> None:
        super()._backward(loss if self._weight == 1.0 else loss * self._weight)

    # -- agreement ----------------------------------------------------------------------------
    def _on_rank0(self, fn):
        """``fn()`` on rank 0 alone; its result, or that it failed, to every rank (a failure
        raises everywhere: rank 0 its own error, the others :class:`PeerFailed`)."""
        out, error = None, None
        if self.rank == 0:
            try:
                out = fn()
            except Exception as e:  # noqa: BLE001 (raised below, after the others know)
                error = e
        box = [("error", None) if error is not None else ("ok", out)]
        dist.broadcast_object_list(box, src=0, group=self.ctrl)
        if box[0][0] == "error":
            raise error if error is not None else PeerFailed("rank 0 failed")
        return box[0][1]

    def _eval_metrics(self) -> dict:
        return self._on_rank0(super()._eval_metrics)

    def _write_checkpoint(self) -> None:
        self._on_rank0(super()._write_checkpoint)
        self.last_saved_step = self.step

    def append_log(self, ev: dict) -> None:
        write = super().append_log
        self._on_rank0(lambda: write(ev))

    def write_summary(self, epochs: int, interrupted: bool) -> dict:
        """Rank 0 writes run.json (the last write: the others are done with the loop)."""
        return super().write_summary(epochs, interrupted) if self.rank == 0 else {}

    def _agree_divergence(self, found: dict | None) -> dict | None:
        """The earliest divergence any rank found (:func:`divergence_key`): one all-reduce,
        and every rank stops at the same point. Rank 0, which writes it, keeps its own
        reason when its own is the one."""
        key = divergence_key(found)
        t = torch.tensor([key], dtype=torch.long)
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.ctrl)
        return found if int(t) == key else divergence_of(int(t))

    def fit(self, epochs: int, *, should_stop=lambda: False, **kwargs) -> dict:
        """:meth:`Trainer.fit` with ``should_stop`` agreed: a rank's request reaches every rank
        one step later (an all-reduce started after step k, read after step k + 1: no wait)."""
        self._pending = None

        def agreed() -> bool:
            hit = False
            if self._pending is not None:
                work, flag = self._pending
                work.wait()
                hit = bool(flag)
            flag = torch.tensor([int(bool(should_stop()))])
            work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.ctrl, async_op=True)
            self._pending = (work, flag)
            return hit

        summary = super().fit(epochs, should_stop=agreed, **kwargs)
        if self._pending is not None:
            self._pending[0].wait()
        return summary


class _TrainForward(torch.nn.Module):
    """The training forward pass (:meth:`ModelFront.forward_train`, embedding included) as one
    module call, so that DDP prepares its gradient hooks; its parameters are the model's."""

    def __init__(self, front) -> None:
        super().__init__()
        self.model, self.front = front.model, front  # the front is no module: not registered

    def forward(self, xb, input_grad: bool):
        return self.front.forward_train(xb, input_grad)


def fit_distributed(group, trainer: DDPTrainer, epochs: int, *, threads: int,
                    callback=None, should_stop=lambda: False, **fit) -> dict:  # fmt: skip
    """Rank 0 (``trainer``: its run opened, locked, restored) trains with every rank of
    ``group`` (:class:`alignctl.report.distributed.Group`); returns rank 0's summary."""
    share = Share(trainer.dir, trainer.cfg, str(trainer.device), threads, epochs, fit)

    def mine() -> dict:
        _join(trainer, None)
        return trainer.fit(epochs, callback=callback, should_stop=should_stop, **fit)

    return group.map(_follow, [share] * group.size, mine)[0]


def _follow(share: Share) -> None:
    """Ranks 1..N-1: build this rank's trainer, join, train; rank 0 writes everything."""
    from alignctl.train.ddp_start import ready

    trainer, error = ready(share, dist.get_rank()), None
    try:
        if trainer is None:  # a library caller that did not call start_ranks
            trainer = DDPTrainer(share.run_dir, share.cfg, share.device, rank=dist.get_rank(),
                                 size=dist.get_world_size())  # fmt: skip
        torch.set_num_threads(share.threads)
    except Exception as e:  # noqa: BLE001 (every rank hears of it in _join)
        error = e
    _join(trainer, error)
    hit = []  # Ctrl-C (torchrun passes it to every rank): stop with the others, after a save
    previous = signal.signal(signal.SIGINT, lambda *_: hit.append(True))
    try:
        trainer.fit(share.epochs, should_stop=lambda: bool(hit), **share.fit)
    finally:
        signal.signal(signal.SIGINT, previous)


def _join(trainer: DDPTrainer | None, error: Exception | None) -> None:
    """Every rank: a gloo group for the loop's agreements, then each rank's start-up error (if
    any) to all: every rank raises the lowest rank's, so rank 0 reports it; else attach."""
    ctrl = dist.new_group(backend="gloo", timeout=timedelta(days=7))  # waits while rank 0 evaluates
    errors: list = [None] * dist.get_world_size()
    dist.all_gather_object(errors, _portable(error), group=ctrl)
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise error if error is not None and dist.get_rank() == 0 else first
    trainer.attach(ctrl)


def _portable(error: Exception | None):
    """The error as it can travel (pickled) to the other ranks."""
    if error is None or isinstance(error, InputError):
        return error
    return RuntimeError(f"{type(error).__name__}: {error}")


def _step_seed(seed: int, step: int, rank: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{step}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
