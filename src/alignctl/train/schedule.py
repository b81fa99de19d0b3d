"""When the Trainer evaluates and saves: the save schedule and the epoch loop around the steps.

Epoch 0 (the initial weights) and the last epoch are always saved; ``save_every`` N and
``log:K`` (K log-spaced epochs) add more. An interrupted run saves where it stopped (mid-epoch
included: the state records the position in the epoch's permutation).
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable

from alignctl.errors import InputError, first_line, short
from alignctl.train.divergence import CHECK_EVERY, ON_NAN


def save_epochs(epochs: int, save_every: int | None, schedule: str | None) -> set[int]:
    """Epochs after which a checkpoint is written (epoch 0 = the initial weights and the last
    epoch are always in). ``schedule`` ``log:K``: K epochs spaced evenly in log scale."""
    keep = {0, epochs}
    if save_every:
        keep.update(range(0, epochs + 1, int(save_every)))
    if schedule:
        kind, _, k = str(schedule).partition(":")
        if kind != "log" or not k.isdigit() or int(k) < 1:
            raise InputError(
                f"invalid save schedule {short(schedule)}; expected log:K, e.g. log:50"
            )
        k = int(k)
        # the top gap, E (1 - E^(-1/(K-1))) <= E ln E / (K-1), is below one epoch: every epoch
        # is in; the same set, without K iterations for a huge K
        if k > epochs * math.log(max(epochs, 1)) + 2:
            keep.update(range(epochs + 1))
        else:
            keep.update(
                round(math.exp(i * math.log(max(epochs, 1)) / max(k - 1, 1))) for i in range(k)
            )
    if not save_every and not schedule:
        keep.update(range(0, epochs + 1, max(1, epochs // 20)))  # about 20 by default
    return {e for e in keep if 0 <= e <= epochs}


def check_criterion(cfg) -> None:
    """Stopping when grokked needs a grokked criterion (InputError): without one the flag
    could never fire, and the run would train every epoch while its user waits for it."""
    if not any(v is not None for v in (getattr(cfg, "grokked", None) or {}).values()):
        raise InputError("--stop-when-grokked needs a grokked criterion (the config's "
                         "grokked: section, e.g. test_acc: 0.95); this run has none")  # fmt: skip


def _check_fit(epochs, eval_every, save_every, save_schedule, stop_when_grokked, callback,
               should_stop) -> tuple:  # fmt: skip
    """:meth:`ScheduleMixin.fit`'s arguments (None: the config's), checked as
    ``alignctl.yaml``'s ``train:`` keys are: one InputError naming the argument, before the run
    folder is touched (not a TypeError after epoch 0 is saved, nor ``eval_every=0.5`` read as
    1, ``save_every=0`` as None or ``stop_when_grokked="no"`` as True). Returns the numbers as
    Python ints."""
    from alignctl.geometry.arguments import count, flags

    try:  # 0: only the initial weights (step 0) are evaluated and saved
        total = None if isinstance(epochs, bool) else operator.index(epochs)
    except TypeError:
        total = None
    if total is None or total < 0:
        raise InputError(f"epochs must be an integer >= 0, not {type(epochs).__name__} "
                         f"{epochs if total is not None else ''}".rstrip())  # fmt: skip
    numbers = (total, count(eval_every, "eval_every"),
               count(save_every, "save_every"))  # fmt: skip
    if save_schedule is not None and not isinstance(save_schedule, str):
        raise InputError(
            f"save_schedule must be 'log:K' or None, not {type(save_schedule).__name__}"
        )
    (grokked,) = (
        (None,) if stop_when_grokked is None else flags(stop_when_grokked=stop_when_grokked)
    )
    if callback is not None and not callable(callback):
        raise InputError(f"callback must be callable or None, not {type(callback).__name__}")
    if not callable(should_stop):
        raise InputError(f"should_stop must be callable, not {type(should_stop).__name__}")
    return (*numbers, grokked)


class ScheduleMixin:
    """Needs ``train_step``, ``_batches``, ``batches_per_epoch`` (:class:`StepMixin`),
    ``save``/``write_summary`` (:class:`RunDirMixin`), ``check_divergence``
    (:class:`DivergenceMixin`) and ``_evaluate`` (:class:`Trainer`)."""

    def trained_epochs(self) -> tuple[int, int]:
        """(epochs completed, batches into the next): where a restored run stands."""
        return self.epoch, self.batch_index if self.perm is not None else 0

    def check_epochs(self, epochs: int) -> None:
        """InputError when a run that has trained ``self.epoch`` epochs (and some batches of
        the next) is asked to end at ``epochs`` before that: the weights are past it, and a
        summary saying ``epochs`` 4 beside ``epochs_completed`` 8 describes no run."""
        done, into = self.trained_epochs()
        if epochs < done + (1 if into else 0):
            part = (
                f" and {into} batch{'es' if into > 1 else ''} of epoch {done + 1}" if into else ""
            )
            least = done + (1 if into else 0)
            raise InputError(f"cannot end this run at epoch {epochs}: it has trained {done} "
                             f"epochs{part} already; give {least} epochs or more")  # fmt: skip

    def fit(self, epochs: int, *, eval_every=None, save_every=None, save_schedule=None,
            stop_when_grokked=None, callback: Callable[[dict], None] | None = None,
            should_stop: Callable[[], bool] = lambda: False,
            on_nan: str | None = None) -> dict:  # fmt: skip
        """Train up to ``epochs`` (the run's total); returns the run summary (run.json).

        ``should_stop()`` is asked after every step (Ctrl-C): the run then saves where it is
        (mid-epoch included) and its summary says ``status: interrupted``. ``on_nan``
        (default: the config's ``train.on_nan``): ``stop`` ends a diverged run at the next
        check point without saving non-finite weights; ``continue`` trains on.
        ``eval_every`` and ``stop_when_grokked`` (default: the config's ``train.eval_every``,
        ``train.stop_when_grokked``); ``epochs`` below what a restored run has trained is an
        InputError (nothing is written); ``save_every`` and
        ``save_schedule``: either replaces the config's schedule, neither keeps it (the
        config's ``train.save_every`` / ``train.save_schedule``, else about 20 checkpoints)."""
        epochs, eval_every, save_every, stop_when_grokked = _check_fit(
            epochs, eval_every, save_every, save_schedule, stop_when_grokked, callback, should_stop
        )
        t = self.cfg.train
        on_nan = (t.get("on_nan") or "stop") if on_nan is None else on_nan
        if eval_every is None:
            eval_every = t.get("eval_every") or 1
        if save_every is None and save_schedule is None:
            save_every, save_schedule = t.get("save_every"), t.get("save_schedule")
        if not isinstance(on_nan, str) or on_nan not in ON_NAN:  # 0 or "" is no default
            raise InputError(f"on_nan must be one of {', '.join(ON_NAN)}, got {short(on_nan)}")
        if stop_when_grokked is None:  # the run's own setting (alignctl.yaml)
            stop_when_grokked = bool(t.get("stop_when_grokked"))
        if stop_when_grokked:
            check_criterion(self.cfg)
        restored = getattr(self, "restored", False)
        fresh = self.step == 0 and self.batch_index == 0 and self.epoch == 0 and not restored
        if not fresh:
            self.check_epochs(epochs)

        def halted() -> bool:
            return self.diverged is not None and on_nan == "stop"

        saves = save_epochs(epochs, save_every, save_schedule)
        if fresh:
            self.start_new_run()  # before clear_summary: a finished run's run.json is its mark
        self.clear_summary()
        if fresh:
            self._evaluate()
            if not halted():
                self.save()
        try:
            return self._loop(epochs, eval_every, saves, stop_when_grokked, callback,
                              should_stop, halted)  # fmt: skip
        except InputError:
            raise
        except Exception as e:
            from alignctl.train.blame import user_frame

            where = user_frame(e)
            if where is None:
                raise  # alignctl's or a library's own: an internal error, with its traceback
            kept = ("no checkpoint was saved" if self.last_saved_step is None
                    else f"checkpoints up to step {self.last_saved_step} are intact")  # fmt: skip
            raise InputError(f"{type(e).__name__} raised in your code at {where} in step "
                             f"{self.step + 1} (epoch {self.epoch + 1}): {first_line(e)}; "
                             f"{kept}") from e  # fmt: skip

    def _loop(self, epochs, eval_every, saves, stop_when_grokked, callback, should_stop,
              halted) -> dict:  # fmt: skip
        """:meth:`fit`'s epochs, after its checks and the step-0 evaluation."""
        interrupted = False
        while self.epoch < epochs and not interrupted and not halted():
            if stop_when_grokked and self.grokked_epoch is not None:
                break
            for idx in self._batches():
                t0 = time.perf_counter()
                self.train_step(self.x[idx], self.y[idx])
                self.train_seconds += time.perf_counter() - t0
                if self.step % CHECK_EVERY == 0 and self.check_divergence(scan=False) and halted():
                    break
                if should_stop():
                    interrupted = True
                    break
            if halted() or self.batch_index < self.batches_per_epoch():
                break  # mid-epoch: the checkpoint below records the position in the epoch
            self.perm, self.batch_index = None, 0  # the epoch is complete (even if interrupted)
            self.epoch += 1
            last = self.epoch == epochs
            if self.epoch % max(1, int(eval_every)) == 0 or last or self.epoch in saves:
                if self.check_divergence(scan=False) and halted():
                    break  # no evaluation of a model already known to be non-finite
                ev = self._evaluate()
                if callback and not halted():
                    callback(ev)
            elif self.check_divergence() and halted():
                break
            if halted():
                break
            if self.epoch in saves or last or (stop_when_grokked and self.grokked_epoch):
                self.save()
        if interrupted and not halted() and self.last_saved_step != self.step:
            self.save()
        return self.write_summary(epochs, interrupted)
