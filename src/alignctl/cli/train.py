"""``alignctl train``: GrokAlign and its peers on the paper's tasks or the user's own."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from alignctl.cli.common import cli_errors, err_console
from alignctl.errors import InputError

Opt = typer.Option


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
    epochs: Annotated[int | None, Opt(help="Total epochs.", min=0)] = None,
    seed: Annotated[int | None, Opt(help="Seed of the initialisation, data and order.")] = None,
    device: Annotated[str, Opt(help="auto | cpu | cuda | mps")] = "auto",
    save_every: Annotated[int | None, Opt(help="Checkpoint every N epochs.", min=1)] = None,
    save_schedule: Annotated[str | None, Opt(help="log:K = K log-spaced checkpoints.")] = None,
    eval_every: Annotated[int, Opt(help="Evaluate every N epochs.", min=1)] = 1,
    stop_when_grokked: Annotated[bool, Opt(help="Stop at the grokked criterion.")] = False,
    force: Annotated[bool, Opt(help="Overwrite an existing run in --out.")] = False,
    resume: Annotated[Path | None, Opt(help="Continue the run in this directory.")] = None,
    quiet: Annotated[bool, Opt("--quiet", "-q")] = False,
    threads: Annotated[int | None, Opt(help="CPU threads (default: 1 for small models).")] = None,
) -> None:
    """Train a network (optionally with GrokAlign or its peers), writing checkpoints that
    `alignctl analyze` reads."""
    import json

    from alignctl.train.schedule import save_epochs
    from alignctl.train.trainer import Trainer, prepare_run_dir

    save_epochs(epochs or 1, save_every, save_schedule)  # a bad schedule fails before any write
    from alignctl.geometry.threads import check_threads

    check_threads(threads)

    if resume is not None:
        if config or task or reg or seed is not None or out:
            raise InputError("--resume takes only --epochs, --device and the schedule options")
        from alignctl.runs.config import load_config

        run_dir = resume
        cfg = load_config(run_dir / "alignctl.yaml")
        trainer = Trainer(run_dir, cfg, device)
        trainer.restore()
    else:
        if out is None:
            raise InputError("--out DIR is required (or --resume DIR)")
        from alignctl.train.build import build_config

        cfg = build_config(config, task, reg or [], seed, epochs)
        from alignctl.runs.config import save_config

        trainer = Trainer(out, cfg, device)  # validates everything before touching files
        prepare_run_dir(out, force)
        save_config(cfg, out / "alignctl.yaml")
        run_dir = out
    from alignctl.train.trainer import set_threads

    set_threads(trainer, threads)
    total = epochs if epochs is not None else int(cfg.train["epochs"])
    stop = _StopFlag()
    previous = signal.signal(signal.SIGINT, stop)
    console = err_console()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    try:
        with Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(),
                      TextColumn("{task.description}"), console=console,
                      disable=quiet or not console.is_terminal) as bar:  # fmt: skip
            task_id = bar.add_task("", total=total, completed=trainer.epoch)

            def show(ev):
                test = ev.get("test_accuracy")
                bar.update(task_id, completed=ev["epoch"], description=(
                    f"loss {ev['loss']:.4f} train {ev['train_accuracy']:.1%}"
                    + ("" if test is None else f" test {test:.1%}")))  # fmt: skip

            summary = trainer.fit(
                total, eval_every=eval_every, save_every=save_every, save_schedule=save_schedule,
                stop_when_grokked=stop_when_grokked, callback=show, should_stop=lambda: stop.hit,
            )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    typer.echo(json.dumps(summary))
    if summary["interrupted"]:
        typer.echo(
            f"interrupted: checkpoint saved; continue with alignctl train --resume {run_dir}",
            err=True,
        )
