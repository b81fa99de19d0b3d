"""`--device cuda` end to end through the CLI: analyze, train (with resume) and race (issue 17).

    python benchmarks/gpu_e2e.py [--epochs 40] [--device cuda]

1. ``alignctl analyze`` of the shipped example run on the CPU and on the device (``--no-cache``,
   ``--json``): the largest relative difference of every metric's mean and standard deviation
   over the checkpoints, and whether accuracies, verdicts and the recommendation agree;
2. ``alignctl train --task sparse-parity`` for ``--epochs`` epochs and ``--resume`` to 1.5x
   that on the device, then its analysis on the device; seconds per epoch against the CPU;
3. ``alignctl race`` (none against GrokAlign, 2 seeds, 2 workers sharing the device, the epoch
   cap at ``--epochs``): exit status and the table.

Each command's exit status is printed; a non-zero one is a failure of the device path, and
the script then exits 1. ``--device cpu`` runs the same commands on the CPU (a check of this
script, not a figure). With ``--device cuda`` and no CUDA device it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples/checkpoints/sparse-parity-grokalign"


FAILED: list[str] = []  # the commands that exited non-zero


def cli(*args) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "alignctl", *map(str, args)], capture_output=True,
                       text=True)  # fmt: skip
    if p.returncode:
        FAILED.append(" ".join(map(str, args[:1])))
        print(f"  exit {p.returncode}: alignctl {' '.join(map(str, args))}\n{p.stderr[-2000:]}")
    return p.returncode, time.perf_counter() - t0, p.stdout


def analyze(run: Path, device: str, out: Path) -> dict | None:
    rc, secs, _ = cli("analyze", run, "--device", device, "--no-cache", "--json", out, "-q")
    print(f"  analyze {run.name} --device {device}: exit {rc}, {secs:.1f} s")
    return json.loads(out.read_text()) if rc == 0 else None


def compare(a: dict, b: dict) -> None:
    worst: dict[str, float] = {}
    for ca, cb in zip(a["checkpoints"], b["checkpoints"], strict=True):
        for part in ("metrics", "metrics_std"):
            for k, va in ca[part].items():
                vb = cb[part][k]
                if va is None or vb is None or not (math.isfinite(va) and math.isfinite(vb)):
                    d = 0.0 if va == vb else math.inf
                else:
                    d = abs(va - vb) / max(abs(va), 1e-12)
                worst[f"{part}.{k}"] = max(worst.get(f"{part}.{k}", 0.0), d)
    for k, d in sorted(worst.items(), key=lambda kv: -kv[1]):
        print(f"    {k:<42} max rel. diff {d:.2e}")
    same = {k: a[k] == b[k] for k in ("verdict", "recommendation", "passed")}
    acc = [(c.get("train_accuracy"), c.get("test_accuracy")) for c in a["checkpoints"]]
    acc_b = [(c.get("train_accuracy"), c.get("test_accuracy")) for c in b["checkpoints"]]
    print(f"    same verdict/recommendation/gates: {same}; same accuracies: {acc == acc_b}")
    for c, u, v in zip(a["checkpoints"], acc, acc_b, strict=True):
        if u != v:  # a prediction flips where two logits are within float32 rounding
            print(f"    {c['name']}: (train, test) accuracy cpu {u} vs device {v}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--parts", default="analyze,train,race")
    args = ap.parse_args()
    parts = args.parts.split(",")
    dev, e = args.device, args.epochs
    if dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device here: nothing to check (run this on a GPU machine)")
            return
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        if "analyze" in parts:
            print(f"1. analyze the shipped example, cpu vs {dev}")
            a = analyze(EXAMPLE, "cpu", tmp / "cpu.json")
            b = analyze(EXAMPLE, dev, tmp / "dev.json")
            if a and b:
                compare(a, b)
        if "train" in parts:
            print(f"2. train sparse-parity {e} epochs, resume to {e * 3 // 2}, on {dev} and cpu")
        per_epoch = {}
        for d in dict.fromkeys((dev, "cpu")) if "train" in parts else ():
            run = tmp / f"train-{d}"
            rc1, s1, _ = cli("train", "--task", "sparse-parity", "--epochs", e, "--device", d,
                             "--out", run, "-q")  # fmt: skip
            rc2, s2, _ = cli("train", "--resume", run, "--epochs", e * 3 // 2, "--device", d, "-q")
            seconds = (s1 + s2) / (e * 3 // 2)
            print(f"  {d}: train exit {rc1}, resume exit {rc2}, {seconds:.3f} s per epoch "
                  "(process start included)")  # fmt: skip
            if rc1 == rc2 == 0:  # a failed command's time is no figure
                per_epoch[d] = seconds
            if d == dev and rc1 == rc2 == 0:
                r = analyze(run, dev, tmp / "trained.json")
                if r:
                    last = r["checkpoints"][-1]
                    print(f"    {len(r['checkpoints'])} checkpoints, last step {last['step']}, "
                          f"verdict {r['verdict']}, test acc {last['test_accuracy']}")  # fmt: skip
        if dev in per_epoch and "cpu" in per_epoch and dev != "cpu":
            print(f"  cpu / {dev} time per epoch: {per_epoch['cpu'] / per_epoch[dev]:.2f}x")
        if "race" in parts:
            race(dev, e, tmp)
    if FAILED:
        sys.exit(f"failed: {', '.join(FAILED)}")


def race(dev: str, e: int, tmp: Path) -> None:
    print(f"3. race none vs grokalign, 2 seeds, 2 workers, on {dev}, cap {e} epochs")
    rc, secs, out = cli("race", "--task", "sparse-parity", "--regs", "none;grokalign",
                        "--seeds", 2, "--workers", 2, "--max-epochs", e, "--device", dev,
                        "--out", tmp / "race", "--markdown", "-", "-q")  # fmt: skip
    print(f"  race exit {rc}, {secs:.1f} s\n{out}")


if __name__ == "__main__":
    main()
