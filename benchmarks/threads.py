"""Thread-count benchmark: training a small model with torch's default thread count, with one
thread, and with alignctl's automatic choice, interleaved in one run (medians).

    python benchmarks/threads.py [--reps 3] [--epochs 30]

Trains the sparse-parity preset's network (an MLP 40-1000-2, batch 32) for ``--epochs``
epochs each time, in a fresh run folder, and prints seconds per run and the ratios
default / one thread and default / automatic. The machine's load is printed with them: the
default's penalty grows with the number of other busy processes (issue 11 saw 33x on a
loaded 2-core machine); on an idle machine the ratio is near 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

DEFAULT = torch.get_num_threads()


def train_once(threads: int | None, epochs: int) -> float:
    from alignctl.train.build import build_config
    from alignctl.train.trainer import Trainer, set_threads

    cfg = build_config(None, "sparse-parity", [], 0, epochs)
    with tempfile.TemporaryDirectory() as d:
        trainer = Trainer(d, cfg, "cpu")
        if threads is None:
            set_threads(trainer, None)
        else:
            torch.set_num_threads(threads)
        t = time.perf_counter()
        trainer.fit(epochs, save_every=epochs)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    cases = {"default": DEFAULT, "one": 1, "auto": None}
    train_once(1, 1)  # warm-up: imports, allocator
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.reps):
        for k, n in cases.items():
            times[k].append(train_once(n, args.epochs))
    med = {k: statistics.median(v) for k, v in times.items()}
    torch.set_num_threads(1)
    from alignctl.train.build import build_config
    from alignctl.train.trainer import Trainer, set_threads

    with tempfile.TemporaryDirectory() as d:
        auto = set_threads(Trainer(d, build_config(None, "sparse-parity", [], 0, 1), "cpu"), None)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, default threads {DEFAULT}, automatic {auto}, "
          f"cores {len(os.sched_getaffinity(0))}, load average {load:.1f}")  # fmt: skip
    for k, v in med.items():
        print(f"  {k:<8} {v:7.2f} s for {args.epochs} epochs")
    print(f"default / one thread: {med['default'] / med['one']:.2f}x")
    print(f"default / automatic:  {med['default'] / med['auto']:.2f}x")


if __name__ == "__main__":
    main()
