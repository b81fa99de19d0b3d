"""The XOR cluster's training step with GrokAlign every step and every k steps, in CPU time.

    nice -n 10 python benchmarks/xor_step.py [--reps 3] [--every 1,4]

The xor-cluster preset (two-layer bias-free MLP 40000-2048-1, squared error, full-batch SGD
on 400 samples; GrokAlign lambda 1.0): ``--every``'s k consecutive real ``Trainer.train_step``
calls (4, a multiple of every k timed) over 4 plain ones, the cases interleaved, medians of
CPU time (this process; on a shared machine wall-clock of the same work varies by more than
the differences measured). The amortised cost of one epoch (one full-batch step) of each, and
with the epochs a race measured, the wall-clock speed-up it implies.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from alignctl.runs.config import config_from_dict
from alignctl.train.presets import PRESETS
from alignctl.train.trainer import Trainer

STEPS = 4


def trainer(folder: Path, regularisers: list) -> Trainer:
    d = PRESETS.get("xor-cluster")()
    d["train"]["regularisers"] = regularisers
    return Trainer(folder, config_from_dict(d, folder), "cpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--every", default="1,4")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ks = [int(k) for k in args.every.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        plain = trainer(Path(tmp) / "plain", [])
        lazy = {k: trainer(Path(tmp) / f"k{k}", [{"name": "grokalign", "lambda": 1.0,
                                                   "every": k}]) for k in ks}  # fmt: skip
    data = plain.data
    x, y = data.x_train, data.y_train
    cases = {"plain": plain, **{f"every={k}": t for k, t in lazy.items()}}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for tr in cases.values():  # warm-up
        tr.train_step(x, y)
    for _ in range(args.reps):
        for name, tr in cases.items():
            t0 = time.process_time()
            for _ in range(STEPS):
                tr.train_step(x, y)
            times[name].append((time.process_time() - t0) / STEPS)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"xor-cluster, full batch 400 x 40000, one thread, {args.reps} reps of {STEPS} steps")
    for k, v in med.items():
        print(f"  {k:<9} {v:6.2f} CPU s per step  {v / med['plain']:5.2f}x plain")


if __name__ == "__main__":
    main()
