"""Alignment metrics in a Hugging Face ``transformers.Trainer`` (the ``transformers`` extra).

    from alignctl.integrations.transformers import AlignmentCallback
    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      callbacks=[AlignmentCallback(probe_ids, probe_labels, every_n_steps=100)])

At the start of training and every ``every_n_steps`` steps (``state.global_step``) the model is
measured on the probe set (:class:`alignctl.integrations.probe.Probe`: eval mode, RNG states
restored, training unchanged) on the main process, and the means are reported through
``Trainer.log`` as ``alignment/centroid_alignment`` etc., so they reach ``state.log_history``
and every ``report_to`` integration (TensorBoard, W&B, MLflow, ...).

Probe inputs: integer token ids (n, L), all of one length without padding, for which the
Jacobian is taken at the output of the input embeddings (``model.get_input_embeddings()``; the
model is then run with ``inputs_embeds=``, paper appendix E; checked once per model to give its
logits from ``input_ids=``, else InputError), or continuous inputs (n, ...)
passed to the model as its first argument. The model's output must hold ``logits`` (n, C)
(sequence classification) or be such a tensor.

``TrainerCallback`` hooks are not handed the Trainer, and ``Trainer.log`` is the only way into
the ``report_to`` integrations: pass ``trainer=`` when the callback is added after the Trainer
is built, or let the callback find the Trainer that calls ``on_train_begin`` (the calling
frames are searched for it once). With ``stop_when="stop"`` a ``stop`` recommendation sets
``control.should_training_stop`` (broadcast from the main process under torch.distributed),
and the reason is logged. The series is kept in ``state.stateful_callbacks``, so every
checkpoint's ``trainer_state.json`` holds it (:mod:`alignctl.integrations.series`): a training
resumed from one (``resume_from_checkpoint``, in a new process too) judges the whole series,
and the checkpoint's own step, measured again, is not logged a second time.
"""

from __future__ import annotations

import inspect
import logging

import torch

try:
    import transformers
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "alignctl.integrations.transformers needs transformers: "
        "pip install 'alignctl[transformers]'"
    ) from e

from alignctl.errors import InputError
from alignctl.integrations import series
from alignctl.integrations.loop import Every, keeps_rng, preserved_state
from alignctl.integrations.probe import PREFIX, Probe

log = logging.getLogger("alignctl")


def _logits(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, (tuple, list)):
        logits = out[0]
    if not isinstance(logits, torch.Tensor):
        raise InputError(f"the model's output ({type(out).__name__}) holds no logits tensor")
    return logits


class TokenModel(torch.nn.Module):
    """A Hugging Face model seen through alignctl's token protocol: ``embed(ids)`` is the input
    embedding, ``forward_embedded(e)`` the logits from ``inputs_embeds=e``."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def forward_embedded(self, e: torch.Tensor) -> torch.Tensor:
        return _logits(self.model(inputs_embeds=e))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return _logits(self.model(input_ids=ids))


class ContinuousModel(torch.nn.Module):
    """A Hugging Face model taking continuous inputs as its first argument, seen as x -> logits."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _logits(self.model(x))


def _find_trainer():
    """The ``transformers.Trainer`` whose method is on the call stack, if any."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            obj = frame.f_locals.get("self")
            if isinstance(obj, transformers.Trainer):
                return obj
            frame = frame.f_back
    finally:
        del frame
    return None


def _broadcast(flag: bool) -> bool:
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, src=0)
    return bool(t.item())


class AlignmentCallback(transformers.TrainerCallback):
    """Report alignment metrics of the model on a fixed probe set through ``Trainer.log``.

    Args:
        probe_x: token ids (n, L) or continuous inputs (n, ...); probe_y: labels (n,) or None.
        every_n_steps: measure when ``state.global_step`` is a multiple of it.
        metrics: ``fast`` (centroid metrics), ``standard``, ``full`` or names.
        stop_when: None, or ``"stop"`` to stop when the recommendation is ``stop``.
        trainer: the Trainer (found on the call stack at ``on_train_begin`` when omitted).
    """

    def __init__(self, probe_x, probe_y=None, every_n_steps: int = 100, metrics="fast",
                 stop_when: str | None = None, trainer=None, **probe_options) -> None:  # fmt: skip
        self._every = Every(every_n_steps, "every_n_steps")
        self.every = self._every.every
        self.probe = Probe(probe_x, probe_y, metrics=metrics, stop_when=stop_when, **probe_options)
        self.trainer, self._given = trainer, trainer is not None
        self._checked = None  # the model whose embedding path was checked (_check_embedded)
        self.stop_reason: str | None = None
        digest = series.probe_digest(self.probe)
        # the series' key in TrainerState.stateful_callbacks (saved in trainer_state.json): no
        # callback class has this name, so the Trainer never rebuilds a callback from it
        self.state_key = f"alignctl:{self.every}:{digest}"
        self._digest = digest

    def _view(self, model) -> torch.nn.Module:
        if self.probe.x.is_floating_point():
            return ContinuousModel(model)
        if not hasattr(model, "get_input_embeddings"):
            raise InputError("integer probe inputs need a model with get_input_embeddings()")
        view = TokenModel(model)
        if self._checked is not model:  # how a model reads ids is its code: checked once
            self._check_embedded(view)
            self._checked = model
        return view

    def _check_embedded(self, view: TokenModel) -> None:
        """InputError unless the logits from ``inputs_embeds=embed(ids)`` are the model's
        logits from ``input_ids=ids`` on the probe: the Jacobian is taken on the first, and a
        model that reads some ids apart from their embeddings (``*ForSequenceClassification``
        pooling at the last token that is not ``pad_token_id``) would otherwise be measured,
        and its probe accuracy taken, as another function than the one it computes."""
        ids = self.probe.x
        with preserved_state(view), torch.no_grad():
            view.eval()
            try:
                ids = ids.to(next(view.parameters()).device)
                direct, embedded = view(ids), view.forward_embedded(view.embed(ids))
            except Exception:  # noqa: BLE001 (the measurement names what the model cannot take)
                return
        if direct.shape == embedded.shape and torch.allclose(direct, embedded, 1e-4, 1e-5):
            return
        pad = getattr(getattr(view.model, "config", None), "pad_token_id", None)
        why = "it reads some ids apart from their embeddings"
        if pad is not None and bool((ids == pad).any()):
            why = f"the probe holds pad_token_id {pad}: use probe ids without it"
        raise InputError(
            "the model's logits from input_ids differ from those from inputs_embeds on the "
            f"probe, so its Jacobian at the embedding output is not that of its logits ({why})"
        )

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not self._given:  # found anew each time: the callback may serve another Trainer now
            self.trainer = _find_trainer()
        if self.trainer is None:
            raise InputError("AlignmentCallback cannot find its Trainer: pass trainer=")
        # a new training (the callback reused), or a resume: measurements at its first step
        # or later are another run's
        step = int(state.global_step)
        saved = self._saved(state)
        if step > 0 and saved is not None:  # resumed: the series up to the checkpoint
            entries = series.restored(saved.get(self.state_key), self._digest)
            if entries is not None:
                self.probe.entries = entries
        self._every.last, self.stop_reason = self.probe.rewind(step), None
        # resume_from_checkpoint restores state.log_history, which holds the measurement made
        # at the checkpoint's step when it was saved: measure (the verdicts need the entry)
        # but do not log that step a second time
        logged = step > 0 and any(
            h.get("step") == step and any(str(k).startswith(PREFIX) for k in h)
            for h in state.log_history
        )
        control = self._maybe_measure(state, control, model, report=not logged)
        self._save(state)  # the series so far, rewound or not, is what a checkpoint holds
        return control

    @staticmethod
    def _saved(state) -> dict | None:
        saved = getattr(state, "stateful_callbacks", None)
        return saved if isinstance(saved, dict) else None

    def _save(self, state) -> None:
        """The series in ``state`` (saved with every checkpoint's ``trainer_state.json``), so a
        training resumed from a checkpoint in a new process judges the whole series."""
        saved = self._saved(state)
        if saved is not None and state.is_world_process_zero:
            saved[self.state_key] = series.saved(self.probe.entries, self._digest)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        return self._maybe_measure(state, control, model)

    def _maybe_measure(self, state, control, model, report: bool = True):
        step = int(state.global_step)
        if not self._every.due(step):  # every step: nothing else here (no RNG saved)
            return control
        return self._measure(state, control, model, report, step)

    @keeps_rng  # the loggers and report_to integrations it feeds too
    def _measure(self, state, control, model, report: bool, step: int):
        self._every.last = step
        stop = False
        if state.is_world_process_zero:
            entry = self.probe.measure(self._view(model), step)
            self._save(state)
            # Trainer.log ends in on_log, which clears should_log: keep the Trainer's own
            # decision to log the loss at this step.
            if report:
                pending = control.should_log
                self.trainer.log(self.probe.scalars(entry))
                control.should_log = self.trainer.control.should_log = pending
            stop = self.probe.should_stop
        if self.probe.stop_when is not None and _broadcast(stop):
            self.stop_reason = self.probe.stop_reason or "alignctl: stop (from the main process)"
            if state.is_world_process_zero:
                log.warning(self.stop_reason)
            control.should_training_stop = True
        return control
