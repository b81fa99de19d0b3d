"""``alignctl race``: epochs and seconds to grok per regulariser over matched seeds
(the paper's Tables 1 and 4; 25 seeds, paired t-tests on the epochs).

Every (regulariser, seed) pair trains in its own run directory ``OUT/<reg>/seed_<k>`` with
stop-when-grokked; the same seed gives the same data and initialisation to every
regulariser, so the pairs are matched. A pair whose ``run.json`` says it finished is skipped
when the race is run again. Runs that do not grok are counted at ``max_epochs`` (censored):
the speed-up is then a bound (lower when baseline runs are censored, upper when the
regulariser's are), and the table says which.
"""

from __future__ import annotations

import json
import re
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from alignctl.errors import InputError


def slug(reg: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", reg.replace(":", "__").replace(",", "_"))


def pair_dir(out: Path, reg: str, seed: int) -> Path:
    return Path(out) / slug(reg) / f"seed_{seed}"


def finished(path: Path) -> dict | None:
    try:
        summary = json.loads((path / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("race_done") else None


def train_pair(job: dict) -> dict:
    """Worker: train one pair to grokking or max_epochs; returns its run.json summary."""
    import torch

    from alignctl.train.build import build_config
    from alignctl.train.trainer import Trainer, prepare_run_dir

    torch.set_num_threads(job["threads"])
    regs = [] if job["reg"] in ("none", "baseline") else [job["reg"]]
    cfg = build_config(job["config"], job["task"], regs, job["seed"], job["max_epochs"])
    run = Path(job["dir"])
    trainer = Trainer(run, cfg, job["device"])
    prepare_run_dir(run, force=True)
    from alignctl.runs.config import save_config

    save_config(cfg, run / "alignctl.yaml")
    epochs = int(cfg.train["epochs"])
    summary = trainer.fit(epochs, save_every=epochs, stop_when_grokked=True)
    summary["race_done"] = True
    (run / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def table(results: dict, regs: list[str], seeds: list[int], max_epochs: int) -> list[dict]:
    """Per regulariser: mean/std epochs, speed-up over the first entry, paired t-test p,
    mean seconds, wall-clock speed-up, how many runs grokked."""
    from scipy.stats import ttest_rel

    def epochs(r):
        return [results[(r, s)]["grokked_epoch"] if results[(r, s)]["grokked_epoch"] is not None
                else max_epochs for s in seeds]  # fmt: skip

    def seconds(r):
        return [results[(r, s)]["train_seconds"] for s in seeds]

    def grokked_runs(r):
        return sum(results[(r, s)]["grokked_epoch"] is not None for s in seeds)

    base_e, base_s = epochs(regs[0]), seconds(regs[0])
    base_censored = grokked_runs(regs[0]) < len(seeds)
    rows = []
    for r in regs:
        e, sec = epochs(r), seconds(r)
        grokked = grokked_runs(r)
        censored = grokked < len(seeds)
        p = None
        if (
            r != regs[0]
            and len(seeds) > 1
            and len({b - x for b, x in zip(base_e, e, strict=True)}) > 1
        ):
            p = float(ttest_rel(base_e, e).pvalue)  # undefined when every difference is equal
        me, ms = statistics.mean(e), statistics.mean(sec)
        rows.append({
            "reg": r, "mean_epochs": me, "std_epochs": statistics.pstdev(e),
            "speedup": statistics.mean(base_e) / me if me else None, "p_value": p,
            "mean_seconds": ms, "wall_speedup": statistics.mean(base_s) / ms if ms else None,
            "grokked": grokked, "runs": len(seeds),
            "censored": censored or base_censored,
            "bound": bound(base_censored, censored) if r != regs[0] else None,
        })  # fmt: skip
    return rows


def bound(base_censored: bool, reg_censored: bool) -> str | None:
    """What a speed-up with censored runs (counted at max_epochs) is. A censored baseline run
    took at least as long as counted, so the speed-up can only be larger ("lower" bound); a
    censored regulariser run makes it an "upper" bound; both: "unknown"; none: None (exact)."""
    if base_censored and reg_censored:
        return "unknown"
    return "lower" if base_censored else "upper" if reg_censored else None


def run_race(*, task=None, config=None, regs: list[str], seeds: int, seed_offset: int = 0,
             max_epochs: int | None = None, workers: int = 1, out: Path, device: str = "cpu",
             on_update=None) -> dict:  # fmt: skip
    from alignctl.train.build import build_config

    if len(regs) < 1:
        raise InputError("--regs needs at least one entry (the first is the baseline)")
    if len(set(regs)) != len(regs):
        raise InputError("--regs lists a regulariser twice")
    from alignctl.train.regularisers import build_regulariser

    for r in regs:  # validate names and parameters before starting any worker
        cfg = build_config(
            config, task, [] if r in ("none", "baseline") else [r], seed_offset, max_epochs
        )
        for spec in cfg.train["regularisers"]:
            build_regulariser(spec)  # an unknown name fails here, not after the baseline ran
    max_epochs = max_epochs or int(
        build_config(config, task, [], seed_offset, None).train["epochs"]
    )
    seed_list = list(range(seed_offset, seed_offset + seeds))
    results, jobs = {}, []
    for s in seed_list:  # seed-major: an interrupted race still has whole matched seeds
        for r in regs:
            d = pair_dir(out, r, s)
            done = finished(d)
            if done is not None and done.get("epochs") == max_epochs:
                results[(r, s)] = done
            else:
                jobs.append({"reg": r, "seed": s, "dir": str(d), "task": task, "config": config,
                             "max_epochs": max_epochs, "device": device,
                             "threads": max(1, _cores() // max(1, workers))})  # fmt: skip
    total = len(regs) * len(seed_list)
    if on_update:
        on_update(len(results), total, min(workers, len(jobs)))
    if jobs:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(train_pair, j): j for j in jobs}
            for f in as_completed(futures):
                j = futures[f]
                results[(j["reg"], j["seed"])] = f.result()
                if on_update:
                    on_update(len(results), total, min(workers, total - len(results)))
    return {"task": task or str(config), "seeds": len(seed_list), "seed_offset": seed_offset,
            "max_epochs": max_epochs, "rows": table(results, regs, seed_list, max_epochs),
            "out": str(out)}  # fmt: skip


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
