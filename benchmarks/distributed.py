"""``alignctl analyze`` and ``alignctl train`` over 1 and 2 processes (torchrun, gloo, CPU): the
speed-ups, measured in one run (interleaved repetitions, medians of the wall time of the whole
command).

    nice -n 10 python benchmarks/distributed.py [--reps 3] [--checkpoints 20] [--samples 4096]
        [--train-epochs 100] [--only analyze|train]

analyze: a run of ``--checkpoints`` checkpoints of an MLP 64-256-256-10 (random weights, one
seed per checkpoint; synthetic Gaussian inputs, labels from a fixed linear teacher: no data set
is downloaded), ``--metrics standard``, no cache, one thread per process (``--threads 1``,
``OMP_NUM_THREADS=1``). One process: ``python -m alignctl analyze``; two:
``python -m torch.distributed.run --standalone --nproc-per-node 2 -m alignctl analyze``, so the
figure includes everything a user waits for: torchrun's start, both ranks' imports, data and
model building, the rendezvous and the gather. The reports are checked equal (but ``seconds``).

train: the sparse-parity preset (MLP 40-200-200-2, full batch of 1000 samples, AdamW) with
GrokAlign (the paper's lambda 0.1, exact projections), ``--train-epochs`` steps, evaluated
every 10 epochs, one thread per process; two processes train it with DistributedDataParallel
(500 samples each, the gradients all-reduced every step; rank 0 alone evaluates and writes).
Besides the whole command, the training loop alone (run.json's ``train_seconds``: rank 0's
steps, all-reduce waits included). The weights after 10 steps are checked equal within 1e-4
(float summation order); later the two runs drift apart as much as one process's runs with 1
and 2 threads do (rounding amplified by Adam's normalised steps).

The speed-up is bounded by 2 and by the cores the machine leaves free: on a shared 2-core
machine under load the second process does not get a whole core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

SRC = Path(__file__).resolve().parents[1] / "src"
MODEL = {"arch": "mlp", "in_features": 64, "hidden": [256, 256], "out_features": 10}


def make_run(root: Path, checkpoints: int, samples: int) -> Path:
    from alignctl.runs.checkpoints import write_checkpoint
    from alignctl.runs.models import build_model

    g = np.random.default_rng(0)
    x = g.normal(size=(samples + 256, 64)).astype(np.float32)
    y = (x @ g.normal(size=(64, 10))).argmax(1).astype(np.int64)
    root.mkdir(parents=True)
    np.savez(root / "data.npz", x_train=x[:samples], y_train=y[:samples], x_test=x[samples:],
             y_test=y[samples:])  # fmt: skip
    cfg = {"model": MODEL, "data": {"path": "data.npz"}}
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    for k in range(checkpoints):
        torch.manual_seed(k)
        path = root / "checkpoints" / f"step_{k * 100:08d}.safetensors"
        write_checkpoint(path, build_model(MODEL, root).state_dict(), {"step": k * 100})
    return root


def timed(nproc: int, run: Path, out: Path) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    cmd = command(nproc, "analyze", run, "--no-cache", "--threads", 1, "-q", "--json", out)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    seconds = time.perf_counter() - t0
    got = json.loads(out.read_text())
    per_ck = [ck.pop("seconds") for ck in got["checkpoints"]]
    # the checkpoint loop alone: the slowest rank's share (round robin, as alignctl deals it)
    loop = max(sum(per_ck[r::nproc]) for r in range(nproc))
    return seconds, loop, got


def command(nproc: int, *args) -> list[str]:
    cmd = [sys.executable, "-m"]
    if nproc > 1:
        cmd += ["torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m"]
    return cmd + ["alignctl", *map(str, args)]


def timed_train(nproc: int, out: Path, epochs: int) -> tuple[float, float, dict]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    cmd = command(nproc, "train", "--task", "sparse-parity", "--reg", "grokalign:n_proj=exact",
                  "--epochs", epochs, "--eval-every", 10, "--save-every", 10, "--threads", 1,
                  "-q", "--force", "--out", out)  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    seconds = time.perf_counter() - t0
    from safetensors.torch import load_file

    early = load_file(str(out / "checkpoints" / "step_00000010.safetensors"))
    summary = json.loads((out / "run.json").read_text())
    return seconds, summary["train_seconds"], (early, summary["test_accuracy"])


def bench_train(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        times: dict[int, list[float]] = {1: [], 2: []}
        loops: dict[int, list[float]] = {1: [], 2: []}
        got = {}
        for _ in range(args.reps):  # interleaved: the machine's load hits both alike
            for nproc in (1, 2):
                seconds, loop, got[nproc] = timed_train(nproc, Path(tmp) / f"t{nproc}",
                                                        args.train_epochs)  # fmt: skip
                times[nproc].append(round(seconds, 2))
                loops[nproc].append(round(loop, 2))
    # after 10 steps the weights agree to rounding; later the trajectories drift apart as one
    # process's do with another thread count (rounding amplified by Adam's normalised steps)
    a, b = got[1][0], got[2][0]
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-4, f"2-process weights differ from 1-process ones by {worst}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"train: sparse-parity + grokalign (exact), full batch 1000, {args.train_epochs} steps, "
          f"1 thread per process, load average {load:.1f}; weights at step 10 agree to "
          f"{worst:.1e}; final test accuracy {got[1][1]:.3f} / {got[2][1]:.3f}")  # fmt: skip
    report(times, loops, args.reps, "training loop alone (run.json train_seconds, rank 0)")


def report(times, loops, reps, loop_label) -> None:
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"1 process : {one:6.2f} s (median of {reps}: {times[1]})")
    print(f"2 ranks   : {two:6.2f} s (median of {reps}: {times[2]})")
    print(f"speed-up 1 -> 2 processes: {one / two:.2f}x (whole command)")
    loop1, loop2 = statistics.median(loops[1]), statistics.median(loops[2])
    print(f"{loop_label}: {loop1:.2f} s -> {loop2:.2f} s, speed-up {loop1 / loop2:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--checkpoints", type=int, default=20)
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--train-epochs", type=int, default=100)
    ap.add_argument("--only", choices=("analyze", "train"))
    args = ap.parse_args()
    if args.only != "train":
        bench_analyze(args)
    if args.only != "analyze":
        bench_train(args)


def bench_analyze(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run", args.checkpoints, args.samples)
        times: dict[int, list[float]] = {1: [], 2: []}
        loops: dict[int, list[float]] = {1: [], 2: []}
        reports = {}
        for _ in range(args.reps):  # interleaved: the machine's load hits both alike
            for nproc in (1, 2):
                seconds, loop, reports[nproc] = timed(nproc, run, Path(tmp) / f"r{nproc}.json")
                times[nproc].append(round(seconds, 2))
                loops[nproc].append(round(loop, 2))
        assert reports[1] == reports[2], "the 2-process report differs from the 1-process one"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"analyze: {args.checkpoints} checkpoints, MLP 64-256-256-10, {args.samples} samples, "
          f"metrics standard, 1 thread per process, load average {load:.1f}; reports equal "
          "but seconds")  # fmt: skip
    report(times, loops, args.reps, "checkpoint loop alone (slowest rank)")


if __name__ == "__main__":
    main()
