"""``alignctl train``: GrokAlign and its peers on the paper's tasks or the user's own.

Exit codes: 0 the run finished (or stopped when grokked); 2 bad input, a run folder in use by
another process, or a file that cannot be written (full disk); 3 the run diverged (a loss or
weight became NaN/inf; run.json says ``status: diverged``); 130 interrupted by Ctrl-C after
saving a checkpoint (``--resume`` continues it).
"""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from alignctl.cli.common import check_output_folder, cli_errors, err_console
from alignctl.errors import InputError, short

Opt = typer.Option
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


class _StopFlag:
    """First Ctrl-C: finish the step, save a checkpoint, exit cleanly; second: abort."""

    def __init__(self) -> None:
        self.hit = False

    def __call__(self, *_):
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True


@cli_errors
def train(
    out: Annotated[Path | None, Opt(help="Run directory to create.")] = None,
    config: Annotated[Path | None, Opt(help="alignctl.yaml (model, data, train).")] = None,
    task: Annotated[
        str | None, Opt(help="A preset: sparse-parity, xor-cluster, mnist, ...")
    ] = None,
    reg: Annotated[
        list[str] | None, Opt(help="Regulariser, e.g. grokalign:lambda=0.01 (repeat).")
    ] = None,
    epochs: Annotated[
        int | None,
        Opt(help="Total epochs (default: the config's or preset's train.epochs).", min=1),
    ] = None,  # fmt: skip
    seed: Annotated[int | None, Opt(help="Seed of the initialisation, data and order.")] = None,
    device: Annotated[str, Opt(help="auto | cpu | cuda | mps")] = "auto",
    save_every: Annotated[
        int | None,
        Opt(
            help="Checkpoint every N epochs (default: the config's train.save_every or "
            "save_schedule, else max(1, epochs // 20); the first and last epoch always).",
            min=1,
        ),
    ] = None,  # fmt: skip
    save_schedule: Annotated[
        str | None, Opt(help="log:K = K log-spaced checkpoints (replaces the config's schedule).")
    ] = None,
    eval_every: Annotated[
        int | None,
        Opt(
            help="Evaluate every N epochs (default: the config's train.eval_every, else 1).", min=1
        ),
    ] = None,  # fmt: skip
    stop_when_grokked: Annotated[
        bool | None,
        Opt(
            "--stop-when-grokked/--no-stop-when-grokked",
            help="Stop at the grokked criterion (default: the run's train.stop_when_grokked; "
            "a resumed run keeps what it was started with).",
        ),
    ] = None,  # fmt: skip
    on_nan: Annotated[
        str | None,
        Opt(
            metavar="stop|continue",
            help="When a loss or weight becomes NaN/inf: stop (default; exit 3) or continue "
            "(train on; still exit 3). Default: the config's train.on_nan.",
        ),
    ] = None,  # fmt: skip
    force: Annotated[bool, Opt(help="Overwrite an existing run in --out.")] = False,
    resume: Annotated[Path | None, Opt(help="Continue the run in this directory.")] = None,
    quiet: Annotated[
        bool, Opt("--quiet", "-q", help="No progress, notes or summary; only errors.")
    ] = False,
    threads: Annotated[int | None, Opt(help="CPU threads (default: 1 for small models).")] = None,
) -> None:
    """Train a network (optionally with GrokAlign or its peers), writing checkpoints that
    `alignctl analyze` reads. Exit codes: 0 done, 2 input/write error, 3 diverged, 130
    interrupted."""
    from alignctl.train.lock import RunLock

    run_dir = resume if resume is not None else out
    lock = RunLock(run_dir) if run_dir is not None else None
    if resume is not None:
        # the lock before torch's import (seconds on a loaded machine): `analyze --follow`
        # started with the resume sees a writer at once, not only the old run.json
        _check_resume(resume, config, task, reg, seed, out)
        lock.acquire()
    try:
        from alignctl.runs.config import ON_NAN
        from alignctl.train.jsonio import dumps_strict
        from alignctl.train.schedule import save_epochs

        save_epochs(epochs or 1, save_every, save_schedule)  # a bad schedule fails before any write
        from alignctl.geometry.threads import check_threads

        check_threads(threads)

        if on_nan is not None and on_nan not in ON_NAN:
            raise InputError(f"--on-nan must be one of {', '.join(ON_NAN)}, got {short(on_nan)}")
        group = _group()
        options = {k: v for k, v in (("eval_every", eval_every), ("on_nan", on_nan),
                   ("stop_when_grokked", stop_when_grokked)) if v is not None}  # fmt: skip
        if save_every is not None or save_schedule is not None:  # either replaces the schedule
            options.update(save_every=save_every, save_schedule=save_schedule)
        trainer, cfg = _open_trainer(out, config, task, reg, seed, epochs, device, force,
                                     resume, options, lock, group)  # fmt: skip
        from alignctl.train.trainer import set_threads

        n = set_threads(trainer, threads, limit=group and max(1, _cores() // group.local_size))
        if not quiet:
            for note in trainer.notes:
                typer.echo(f"note: {note}", err=True)
        total = epochs if epochs is not None else int(cfg.train["epochs"])
        fit = trainer.fit
        if group is not None:  # torchrun: DistributedDataParallel over the group's ranks
            from alignctl.train.ddp import fit_distributed

            fit = functools.partial(fit_distributed, group, trainer, threads=n)
        summary = _fit(fit, trainer.epoch, total, quiet)  # the schedule: the run's config
    finally:
        if lock is not None:
            lock.release()
    if not quiet:
        typer.echo(dumps_strict(summary))
    if summary["diverged"]:
        kept = summary["last_checkpoint_step"]
        kept = "no checkpoint" if kept is None else f"last checkpoint: step {kept}"
        typer.echo(f"error: the run diverged: {summary['diverged_reason']}; run.json says "
                   f"status diverged; {kept}", err=True)  # fmt: skip
        raise typer.Exit(EXIT_DIVERGED)
    if summary["interrupted"]:
        typer.echo(
            f"interrupted: checkpoint saved; continue with alignctl train --resume {run_dir}",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED)


def _check_resume(resume: Path, config, task, reg, seed, out) -> None:
    """What ``--resume`` needs, checked before its lock: no options of a new run, a folder
    that holds a run."""
    if config or task or reg or seed is not None or out:
        raise InputError("--resume takes only --epochs, --device, --on-nan and the schedule "
                         "options")  # fmt: skip
    if not resume.is_dir():
        raise InputError(f"--resume {resume}: no such run directory")
    if not (resume / "alignctl.yaml").exists():  # killed before its config was written
        raise InputError(f"{resume} holds no alignctl.yaml, so no run to resume; start the "
                         "run again with --out")  # fmt: skip


def _group():
    """torchrun's group (:mod:`alignctl.report.distributed`), or None for one process."""
    from alignctl.report.distributed import active

    group = active()
    return group if group is not None and group.size > 1 else None


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _open_trainer(out, config, task, reg, seed, epochs, device, force, resume, options, lock,
                  group=None):  # fmt: skip
    """(Trainer, config) for a new run in ``out`` or the run in ``resume``; takes ``lock``
    before anything in the folder changes. Under torchrun (``group``), rank 0's
    :class:`alignctl.train.ddp.DDPTrainer`. ``options``: the ``train:`` keys given on the
    command line (schedule, on_nan, stop_when_grokked), recorded in alignctl.yaml, so that a
    plain ``--resume`` continues the run as it was started."""
    from alignctl.runs.config import load_config, save_config
    from alignctl.train.schedule import check_criterion
    from alignctl.train.trainer import Trainer, prepare_run_dir

    make = Trainer
    if group is not None:
        from alignctl.train.ddp import DDPTrainer
        from alignctl.train.ddp_start import start_ranks

        def make(run_dir, cfg, device):  # every rank's trainer built before anything is written
            trainer = DDPTrainer(run_dir, cfg, device, rank=0, size=group.size)
            start_ranks(group, trainer)
            return trainer

    if resume is not None:
        _check_resume(resume, config, task, reg, seed, out)
        # the lock first (it changes nothing; train() took it already): `analyze --follow`
        # started with the resume sees a writer at once, not the old run.json this removes
        lock.acquire()
        cfg = load_config(resume / "alignctl.yaml")
        given = {**options, **({"epochs": epochs} if epochs is not None else {})}
        changed = {k: v for k, v in given.items() if cfg.train.get(k) != v}
        cfg.train.update(changed)
        if cfg.train.get("stop_when_grokked"):
            check_criterion(cfg)
        trainer = make(resume, cfg, device)
        trainer.restore()
        trainer.check_epochs(int(cfg.train["epochs"]))  # before anything is rewritten
        _note_nothing_to_train(trainer, cfg)
        if changed:  # the next plain --resume continues with them
            try:
                save_config(cfg, resume / "alignctl.yaml")
            except OSError as e:
                raise InputError(f"cannot write {resume / 'alignctl.yaml'}: "
                                 f"{e.strerror or e}") from None  # fmt: skip
        return trainer, cfg
    if out is None:
        raise InputError("--out DIR is required (or --resume DIR)")
    check_output_folder(out, "--out")
    from alignctl.train.build import build_config

    cfg = build_config(config, task, reg or [], seed, epochs, overrides=options)
    if cfg.train.get("stop_when_grokked"):
        check_criterion(cfg)
    trainer = make(out, cfg, device)  # validates everything before touching files
    lock.acquire()  # creates out; a second process into the same out stops here
    try:
        prepare_run_dir(out, force)
        save_config(cfg, out / "alignctl.yaml")
    except OSError as e:
        raise InputError(f"cannot write the run in {out}: {e.strerror or e}") from None
    return trainer, cfg


def _note_nothing_to_train(trainer, cfg) -> None:
    """A note when the resumed run will train no step: it has reached its last epoch, or it
    stops when grokked and has grokked (the option that trains on is named)."""
    done, into = trainer.trained_epochs()
    total = int(cfg.train["epochs"])
    if done >= total and not into:
        trainer.notes.append(f"this run has trained all its {total} epochs; nothing to train "
                             "(--epochs N trains on to epoch N)")  # fmt: skip
    elif cfg.train.get("stop_when_grokked") and trainer.grokked_epoch is not None:
        trainer.notes.append(f"this run stops when grokked and grokked at epoch "
                             f"{trainer.grokked_epoch}; nothing to train "
                             "(--no-stop-when-grokked trains on)")  # fmt: skip


def _fit(fit, done: int, total: int, quiet: bool) -> dict:
    """``fit`` (a Trainer's, from epoch ``done``) with a progress bar on a terminal; the first
    Ctrl-C stops it cleanly."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    stop = _StopFlag()
    previous = signal.signal(signal.SIGINT, stop)
    console = err_console()
    try:
        with Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(),
                      TextColumn("{task.description}"), console=console,
                      disable=quiet or not console.is_terminal) as bar:  # fmt: skip
            task_id = bar.add_task("", total=total, completed=done)

            def show(ev):
                bar.update(task_id, completed=ev["epoch"], description=" ".join(
                    f"{label} {ev[key]:{fmt}}" for label, key, fmt in _SHOWN
                    if isinstance(ev.get(key), float)))  # fmt: skip

            return fit(total, callback=show, should_stop=lambda: stop.hit)
    finally:
        signal.signal(signal.SIGINT, previous)


_SHOWN = (("loss", "loss", ".4f"), ("train", "train_accuracy", ".1%"),
          ("test", "test_accuracy", ".1%"))  # fmt: skip
