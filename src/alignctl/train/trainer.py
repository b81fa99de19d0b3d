"""The training loop behind ``alignctl train``: presets or user configs, regularisers as
plug-ins, self-describing run directories, exact resume.

The Trainer is assembled from three parts: :mod:`.step` (one optimisation step),
:mod:`.schedule` (when to evaluate and save) and :mod:`.rundir` (the run directory and
resume state). On the CPU a run that is killed and resumed ends with the same weights, bit
for bit, as one that was not: the optimiser, regulariser, data-order and RNG states are saved
with each checkpoint, and a resumed epoch replays the saved permutation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from alignctl.errors import InputError, first_line
from alignctl.evaluation.accuracy import evaluate, grokked_problem, is_grokked
from alignctl.geometry.devices import resolve_device
from alignctl.geometry.transfer import to_device
from alignctl.train.divergence import DivergenceMixin
from alignctl.train.rundir import RUN_FILES, RunDirMixin, prepare_run_dir
from alignctl.train.schedule import ScheduleMixin, save_epochs
from alignctl.train.step import StepMixin, build_optimizer, ignored_optimizer_settings

__all__ = ["RUN_FILES", "Trainer", "prepare_run_dir", "save_epochs"]


class Trainer(StepMixin, ScheduleMixin, RunDirMixin, DivergenceMixin):
    """One run: ``Trainer(run_dir, cfg).fit(epochs)``; the config is a
    :class:`alignctl.config.Config` with model, data, train and grokked sections."""

    # one process (alignctl.train.ddp: one rank of several, set before __init__ checks the data)
    rank, size = 0, 1

    def __init__(self, run_dir: Path, cfg, device="auto") -> None:
        from alignctl.evaluation.losses import get_loss
        from alignctl.runs.config import Config
        from alignctl.runs.limits import as_path
        from alignctl.runs.models import build_model
        from alignctl.runs.tasks import load_data
        from alignctl.train.regularisers import build_regulariser

        if not isinstance(cfg, Config):  # a dict or a path: say how to make one
            raise InputError(f"cfg must be an alignctl Config (alignctl.build_config(...) or "
                             f"alignctl.runs.config.load_config(path)), not "
                             f"{type(cfg).__name__}")  # fmt: skip
        self.dir, self.cfg, t = as_path(run_dir, "run_dir"), cfg, cfg.train
        self.ckpt_dir = self.dir / "checkpoints"
        self.device = resolve_device(device)
        if self.device.type == "cuda" and self.device.index is None:  # "cuda:0" as DDP ranks
            self.device = torch.device("cuda", torch.cuda.current_device())  # write it
        self.data = load_data(cfg.data, cfg.base_dir)
        problem = grokked_problem(cfg.grokked, self.data)
        if problem:
            raise InputError(f"grokked: {problem}; change or remove it")
        torch.manual_seed(int(t["seed"]))  # the initialisation depends on the seed alone
        self.model = build_model(cfg.model, cfg.base_dir).to(self.device)
        frozen = tuple(t.get("freeze") or ())
        names = [name for name, _ in self.model.named_parameters()]
        params = []
        for name, p in self.model.named_parameters():
            # a factory's requires_grad=False is frozen too (PyTorch's meaning), never thawed
            p.requires_grad_(p.requires_grad and not _frozen(name, frozen, names))
            if p.requires_grad:
                params.append(p)
        _check_freeze(frozen, [name for name, _ in self.model.named_parameters()], params)
        self.params = params
        self.opt = build_optimizer(params, t["optimizer"])
        self.loss_fn = get_loss(t["loss"])
        self.regs = [build_regulariser(dict(r)) for r in t.get("regularisers") or []]
        from alignctl.train.regularisers import check_magnitudes

        for dtype in {p.dtype for p in params}:
            for spec in t.get("regularisers") or []:
                check_magnitudes(dict(spec), dtype)
        from alignctl.geometry.inputs import ModelFront
        from alignctl.train.relu_chain import ReluChain

        self.output = (cfg.model or {}).get("output")
        self.front = ModelFront(self.model, self.data.x_train[:2].to(self.device), self.output)
        # a ReLU MLP's Jacobian penalties as weight products (no double backward)
        self.chain = ReluChain.of(self.model, self.front)
        for r in self.regs:
            if hasattr(r, "input_range"):  # attacks stay inside the data's valid range
                r.input_range = self.data.input_range
                r.output = self.output
        self.gen = torch.Generator().manual_seed(int(t["seed"]))  # data order
        # the dtype the model consumes: uint8 images become floats, tokens stay integers
        self.x = self.front.cast(self.data.x_train, self.device)
        self.y = to_device(self.data.y_train, self.device)
        for r in self.regs:
            try:
                r.check_inputs(self.x)
            except ValueError as e:
                raise InputError(f"regulariser {r.name}: {e}") from None
        self._check_fit()
        self.step = self.epoch = self.batch_index = 0
        self.perm: torch.Tensor | None = None
        self.train_seconds = 0.0
        self.grokked_epoch: int | None = None
        self.last_eval: dict = {}
        self.diverged: dict | None = None  # {"step", "reason"} once a loss or weight is not finite
        self.last_saved_step: int | None = None
        self.resumed_threads: int | None = None  # the CPU thread count a resumed run had
        # what restore() fell back on, settings without effect; the CLI prints them
        self.notes: list[str] = ignored_optimizer_settings(t["optimizer"])
        if t.get("batch_size") and int(t["batch_size"]) > len(self.x):  # said, not silent
            self.notes.append(f"batch_size {t['batch_size']} is more than the {len(self.x)} "
                              "training samples: every step is one full batch")  # fmt: skip

    def _check_fit(self) -> None:
        """The model must take the data and the loss its outputs: a one-line error now, not a
        traceback in the first step. The checks run the model in training mode and leave no
        trace: the RNG (dropout), the buffers (BatchNorm's running statistics: they once
        reached the step-0 checkpoint, "the initial weights", moved by two training samples)
        and the mode are restored."""
        from alignctl.train.step import buffers_kept

        mode = self.model.training
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=cuda), buffers_kept(self.model), torch.no_grad():
                self._check_outputs()
                self._check_smallest_batch()
        finally:
            self.model.train(mode)

    def _check_outputs(self) -> None:
        from alignctl.evaluation.losses import accuracy
        from alignctl.geometry.vjp import as_matrix

        xb, yb = self.x[:2], self.y[:2]
        try:
            out = self.front(xb)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            raise InputError(f"the model cannot be applied to the data: {first_line(e)}") from None
        as_matrix(out, len(xb), tuple(self.x.shape))  # (n, C) or (n,): named for all the data
        from alignctl.runs.validate import check_declared_classes, check_labels

        n_out = 1 if out.dim() == 1 else out.shape[-1]
        check_declared_classes(self.data.num_classes, n_out)
        # both splits, as analyze checks them: test labels are evaluated every epoch
        check_labels(self.data.y_train, n_out, "y_train")
        check_labels(self.data.y_test, n_out, "y_test")
        self.loss_fn(out, yb)  # InputError if the loss does not fit the outputs
        accuracy(out, yb)

    def _check_smallest_batch(self) -> None:
        """The model must take, in training mode, the fewest rows a step forwards (an epoch's
        last batch, a penalty's subset): BatchNorm refuses one row, and mid-run that was an
        "internal error" after checkpoints were written."""
        n, bs = len(self.x), int(self.cfg.train.get("batch_size") or len(self.x))
        sizes = {k for b in {min(bs, n), n % bs or min(bs, n)} for k in self._rows(b)}
        sizes |= {r.penalty_size(s) for r in self.regs for s in tuple(sizes)}
        k, over = min(sizes), f" split over {self.size} processes" if self.size > 1 else ""
        try:
            self.model.train()
            self.front(self.x[:k])
        except (RuntimeError, ValueError) as e:
            raise InputError(
                f"the model cannot train on a batch of {k} row{'s' if k > 1 else ''} ({n} "
                f"samples, batch_size {bs}{over}, and the regularisers' "
                f"subsets): {first_line(e)}"
            ) from None

    def _rows(self, batch: int) -> set[int]:
        """The rows a step forwards from a batch of ``batch``: all of it in one process; under
        DDP each rank's share (:class:`alignctl.train.ddp.DDPTrainer` deals rank r of N rows
        [B r // N, B (r + 1) // N), an empty share forwarding one row). Every rank checks
        every share: BatchNorm refuses a share of one row that one process never forwards."""
        n = self.size
        return {max(batch * (r + 1) // n - batch * r // n, 1) for r in range(n)}

    def _eval_metrics(self) -> dict:
        """Accuracies and loss of the current model on the run's data, with the counters."""
        ev = evaluate(self.model, self.data, self.loss_fn, self.device, output=self.output)
        ev.update(epoch=self.epoch, step=self.step, train_seconds=round(self.train_seconds, 4))
        return ev

    def _evaluate(self) -> dict:
        ev = self._eval_metrics()
        bad = self.nonfinite_model(ev["loss"])
        self.check_divergence(bad, scan=False)
        if bad is not None:  # outputs of a non-finite model are no predictions
            ev.update({k: None for k in ev if k.endswith("accuracy")}, nonfinite=bad)
        elif self.grokked_epoch is None and is_grokked(ev, self.cfg.grokked):
            self.grokked_epoch = self.epoch
        ev["grokked"] = self.grokked_epoch is not None
        self.last_eval = ev
        self.append_log(ev)
        return ev


def set_threads(trainer: Trainer, threads: int | None, *, limit: int | None = None) -> int:
    """Set torch's CPU thread count for training (process-wide; the CLI's choice): ``threads``
    if given, else :func:`alignctl.geometry.threads.auto_threads` of one step's work, not
    load-aware, at most ``limit``; a resumed run (``trainer.resumed_threads``, saved with each
    checkpoint) takes the count it trained with unless ``threads`` says otherwise (a note):
    it changes the weights' last bits. Returns it."""
    from alignctl.geometry.threads import (
        TRAIN_SMALL_WORK,
        auto_threads,
        check_threads,
        forward_work,
    )

    n = check_threads(threads)
    saved = getattr(trainer, "resumed_threads", None) if trainer.device.type == "cpu" else None
    if n is None and saved is not None:
        n = saved  # a resumed run continues bit for bit only with the count it trained with
    elif n is not None and saved is not None and n != saved:
        trainer.notes.append(
            f"--threads {n}: this run trained with {saved} threads so far; the weights will "
            "differ in their last bits from an uninterrupted run"
        )
    if n is None:
        if trainer.device.type != "cpu":
            return torch.get_num_threads()
        bs = int(trainer.cfg.train.get("batch_size") or trainer.x.shape[0])
        work = forward_work(trainer.model, trainer.x[:1], lambda m, x: trainer.front(x)) * bs
        n = auto_threads(3 * work, small=TRAIN_SMALL_WORK)  # forward + backward: ~3 forwards
    n = min(n, limit) if limit else n
    torch.set_num_threads(n)
    return n


def _frozen(name: str, prefixes: tuple[str, ...], names: list[str]) -> bool:
    """Whether ``train.freeze`` freezes the parameter ``name``. A prefix that names a module
    or parameter of the model (``1``, ``encoder.layer.1``) freezes it and what it holds, at
    the dots: ``1`` is not also the start of ``11.weight`` and ``13.bias`` (an nn.Sequential's
    layers 11 and 13 frozen with layer 1); any other prefix is the start of the names
    (``layer`` freezes ``layer1.`` and ``layer2.``)."""
    for f in prefixes:
        whole = any(n == f or n.startswith(f + ".") for n in names) and not f.endswith(".")
        if (name == f or name.startswith(f + ".")) if whole else name.startswith(f):
            return True
    return False


def _check_freeze(frozen: tuple[str, ...], names: list[str], trainable: list) -> None:
    """InputError for a ``train.freeze`` prefix that names no parameter (a typo froze nothing,
    silently) or one that leaves nothing to train (torch: "empty parameter list")."""
    unknown = [f for f in frozen if not any(n.startswith(f) for n in names)]
    if unknown:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise InputError(f"train.freeze: {unknown[0]!r} is the start of no parameter name; "
                         f"the model's are {shown}")  # fmt: skip
    if not trainable:
        why = (
            f"train.freeze {list(frozen)!r} freezes"
            if frozen
            else "the model has requires_grad off for"
        )
        raise InputError(f"{why} every parameter: nothing to train")
