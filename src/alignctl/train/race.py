"""``alignctl race``: epochs and seconds to grok per regulariser over matched seeds
(the paper's Tables 1 and 4; 25 seeds, paired t-tests on the epochs when every run grokked,
the log-rank test under censoring otherwise).

Every (regulariser, seed) pair trains in its own run directory ``OUT/<reg>/seed_<k>`` with
stop-when-grokked; the same seed gives the same data and initialisation to every
regulariser, so the pairs are matched. A pair whose ``run.json`` says it finished is skipped
when the race is run again. Runs that do not grok are counted at ``max_epochs`` (censored):
the speed-up is then a bound (lower when baseline runs are censored, upper when the
regulariser's are), and the table says which. A pair that diverged (NaN/inf loss or
weights; run.json ``status: diverged``) did not grok: it is censored the same way and counted
in the row's ``diverged``.

Ctrl-C: the workers ignore SIGINT (no tracebacks from them); the main process stops them and
re-raises ``KeyboardInterrupt``; finished pairs are on disk and are skipped next time.
"""

from __future__ import annotations

import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from alignctl.errors import InputError
from alignctl.runs.limits import loads_json
from alignctl.train.jsonio import dumps_strict, loads_strict

# the table's statistics, importable from here as before
from alignctl.train.race_table import LOGRANK, PAIRED_T, bound, compare, table  # noqa: F401


def slug(reg: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", reg.replace(":", "__").replace(",", "_"))


def pair_dir(out: Path, reg: str, seed: int) -> Path:
    return Path(out) / slug(reg) / f"seed_{seed}"


def finished(path: Path) -> dict | None:
    try:
        summary = loads_json((path / "run.json").read_text())
    except (OSError, ValueError):
        return None
    # a run.json edited into a list (or any non-mapping) is no finished pair: it is run again
    return summary if isinstance(summary, dict) and summary.get("race_done") else None


def load_result(path) -> dict:
    """A race result saved with ``--json``: strict JSON with a ``rows`` list, else InputError."""
    from alignctl.runs.limits import read_text_capped

    try:
        text = read_text_capped(Path(path), "race result")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        result = loads_strict(text)
    except ValueError as e:
        raise InputError(f"{path}: not a race result (invalid JSON: {e})") from None
    if not isinstance(result, dict) or not isinstance(result.get("rows"), list):
        raise InputError(f"{path}: not a race result (no 'rows' list)")
    from alignctl.train.race_result import check_result

    check_result(result, path)
    return result


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle


def train_pair(job: dict) -> dict:
    """Worker: train one pair to grokking or max_epochs; returns its run.json summary
    (``status: diverged`` for a pair whose loss or weights became NaN/inf)."""
    from alignctl.runs.atomic import atomic_write_text
    from alignctl.runs.config import save_config
    from alignctl.train.build import build_config
    from alignctl.train.lock import RunLock
    from alignctl.train.trainer import Trainer, prepare_run_dir, set_threads

    cfg = build_config(job["config"], job["task"], _reg_list(job["reg"]), job["seed"],
                       job["max_epochs"])  # fmt: skip
    run = Path(job["dir"])
    trainer = Trainer(run, cfg, job["device"])
    set_threads(trainer, job.get("threads"), limit=job.get("max_threads"))
    with RunLock(run):
        try:
            prepare_run_dir(run, force=True)
            save_config(cfg, run / "alignctl.yaml")
        except OSError as e:
            raise InputError(f"cannot write the run in {run}: {e.strerror or e}") from None
        epochs = int(cfg.train["epochs"])
        try:
            summary = trainer.fit(epochs, eval_every=1, save_every=epochs, stop_when_grokked=True)
        except InputError as e:  # one line, naming the pair (the others' results are kept)
            raise InputError(f"pair {job['reg']} seed {job['seed']} ({run}): {e}") from None
        summary["race_done"] = True
        try:
            atomic_write_text(run / "run.json", dumps_strict(summary, indent=2) + "\n")
        except OSError as e:
            raise InputError(f"cannot write {run / 'run.json'}: {e.strerror or e}") from None
    return summary


def _reg_list(reg: str) -> list[str]:
    return [] if reg in ("none", "baseline") else [reg]


def _check_pair(d: Path, cfg) -> None:
    """A pair folder holding files alignctl did not write, or another race's pair (another
    task, config or setting: its results would be reported as this one's), is an InputError
    before anything trains; only this race's own pairs are reused or retrained."""
    from alignctl.train.owned import refuse_foreign, same_config
    from alignctl.train.rundir import RUN_FILES

    refuse_foreign(d, RUN_FILES)
    if (d / "alignctl.yaml").exists() and not same_config(d, cfg):
        raise InputError(f"{d} holds a pair trained with another configuration (task, "
                         "config or regulariser settings); nothing was changed: use another "
                         "--out")  # fmt: skip


# the pairs are listed (and their folders checked) before training: --seeds 1e12 was a
# MemoryError; a real race is 25 seeds x a few settings
MAX_PAIRS = 100_000


def run_race(*, task=None, config=None, regs: list[str], seeds: int, seed_offset: int = 0,
             max_epochs: int | None = None, workers: int = 1, out: Path, device: str = "cpu",
             on_update=None, threads: int | None = None, runner=None) -> dict:  # fmt: skip
    """Train every (regulariser, seed) pair; ``threads``: CPU threads per worker (default:
    :func:`alignctl.train.trainer.set_threads`'s rule, at most the cores over the workers).
    ``runner(jobs, workers, on_result)`` trains the unfinished pairs (default
    :func:`run_jobs`; over torchrun's ranks: :func:`alignctl.report.sharded.race_runner`)."""
    from alignctl.train.build import build_config, refuse_shared_regularisers

    if len(regs) < 1:
        raise InputError("--regs needs at least one entry (the first is the baseline)")
    if not isinstance(seeds, int) or not 1 <= seeds * len(regs) <= MAX_PAIRS:
        raise InputError(f"a race trains at most {MAX_PAIRS:,} (regulariser, seed) pairs; "
                         f"--seeds {seeds} x {len(regs)} settings asks for more")  # fmt: skip
    from alignctl.train.regularisers import build_regulariser, setting

    base = build_config(config, task, [], seed_offset, None)
    for spec in base.train.get("regularisers") or []:
        build_regulariser(dict(spec))  # the config's own mistakes first
    refuse_shared_regularisers(base, config)
    if all(v is None for v in base.grokked.values()):  # every pair would run to max epochs
        raise InputError(f"{config or task} sets no grokked criterion (grokked:): no pair groks")
    seen: dict = {}
    for r in regs:  # validate names and parameters before starting any worker
        cfg = build_config(config, task, _reg_list(r), seed_offset, max_epochs)
        specs = cfg.train.get("regularisers") or []
        for spec in specs:
            build_regulariser(dict(spec))  # an unknown name fails here, not after other pairs
        key = [setting(dict(spec)) for spec in specs]  # one setting spelled two ways: one row
        twin = next((other for other, k in seen.items() if k == key), None)
        if twin is not None:
            raise InputError(f"--regs lists one setting twice: {twin!r} and {r!r} train the "
                             "same regularisers")  # fmt: skip
        seen[r] = key
    max_epochs = max_epochs or int(base.train["epochs"])
    seed_list = list(range(seed_offset, seed_offset + seeds))
    results, jobs = {}, []
    for s in seed_list:  # seed-major: an interrupted race still has whole matched seeds
        for r in regs:
            d = pair_dir(out, r, s)
            _check_pair(d, build_config(config, task, _reg_list(r), s, max_epochs))
            done = finished(d)
            if done is not None and done.get("epochs") == max_epochs:
                results[(r, s)] = done
            else:
                jobs.append({"reg": r, "seed": s, "dir": str(d), "task": task, "config": config,
                             "max_epochs": max_epochs, "device": device,
                             "threads": threads,
                             "max_threads": max(1, _cores() // max(1, workers))})  # fmt: skip
    total = len(regs) * len(seed_list)
    if on_update:
        on_update(len(results), total, min(workers, len(jobs)))

    def done(job: dict, summary: dict) -> None:
        results[(job["reg"], job["seed"])] = summary
        if on_update:
            on_update(len(results), total, min(workers, total - len(results)))

    if jobs:
        (runner or run_jobs)(jobs, workers, done)
    return {"task": task or str(config), "seeds": len(seed_list), "seed_offset": seed_offset,
            "max_epochs": max_epochs, "rows": table(results, regs, seed_list, max_epochs),
            "out": str(out)}  # fmt: skip


def run_jobs(jobs: list[dict], workers: int, on_result) -> None:
    """Train ``jobs`` in a pool of ``workers`` spawned processes; ``on_result(job, summary)``
    as each finishes. Ctrl-C or a failed pair stops the others at once and re-raises."""
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_ignore_sigint
    )
    try:
        futures = {pool.submit(train_pair, j): j for j in jobs}
        for f in as_completed(futures):
            on_result(futures[f], f.result())
    except BaseException:  # Ctrl-C or a failed pair: stop the others now, not at the end
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
