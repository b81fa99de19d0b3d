"""On a CUDA device: the training step's cost, the many-class metrics' cost and the monitor's
overhead, each a ratio measured in one run (issues 17, 18 and 14).

    python benchmarks/gpu_bench.py [--reps 7] [--only steps|classes|monitor]

Wall-clock with ``torch.cuda.synchronize`` around each timed block (a GPU's time is not this
process's CPU time), cases interleaved round-robin, medians. Float32, TF32 off (``measure``
switches it off while measuring; the trainer leaves torch's default, which is off for
matrix products).

  steps    ``Trainer.train_step`` of the MNIST preset's network (random MNIST-shaped data) and
           of the xor-cluster preset (MLP 40000-2048-1, full batch of 400): plain, GrokAlign
           every step, ``every=4``, ``subsample=0.0625`` through the ReLU chain and through
           autograd: time per step and over plain (the paper's wall-clock figures come from a
           GPU; the CPU ones are in the README).
  classes  ``alignctl.measure`` (all default metrics) on an MLP 3072-256-256-C and a CNN
           3x32x32 at C = 10, 100, 1000 (exact up to 256 classes, sketched above), and
           torchvision's resnet18 at 3x224x224 with 1000 classes: ms and peak CUDA memory per
           sample, the ratio cost(C=1000)/cost(C=10), the sketch's relative error against the
           exact path at C = 1000, and the centroid metrics at C = 10 and 50,000.
  monitor  the plain loop of ``benchmarks/monitor_overhead.py`` on the device: 500-step segments
           with ``alignctl.Monitor(every=100, metrics="fast")`` (512 probe samples) over the
           same without, per-pair medians.

Without a CUDA device it says so and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import alignctl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from geometry import interleaved, timed  # noqa: E402  (the timing protocol)
from large_c import cnn, mlp  # noqa: E402  (the CPU benchmark's models)

from alignctl.runs.config import config_from_dict  # noqa: E402
from alignctl.train.presets import PRESETS, preset_reg_defaults  # noqa: E402
from alignctl.train.trainer import Trainer  # noqa: E402

DEV = "cuda"  # --device cpu runs the same code here (a check of the script, not a figure)


def sync_time(fn) -> float:
    """Wall-clock seconds of fn(), synchronised on CUDA (geometry.py's timer)."""
    return timed(fn, torch.device(DEV))


def trainer(folder: Path, task: str, regs: list) -> Trainer:
    d = PRESETS.get(task)()
    if task == "mnist":  # no IDX files needed: the costs depend on the shapes only
        rng = np.random.default_rng(0)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "data.npz", x_train=rng.random((1024, 784), dtype=np.float32),
                 y_train=rng.integers(0, 10, 1024))  # fmt: skip
        d["data"] = {"path": "data.npz", "num_classes": 10, "input_range": [0, 1]}
    d["train"]["regularisers"] = regs
    return Trainer(folder / "run", config_from_dict(d, folder), DEV)


def steps(reps: int) -> None:
    settings = {"grokalign": {}, "every=4": {"every": 4}, "subsample=0.0625": {"subsample": 0.0625},
                "subsample=0.0625,autograd": {"subsample": 0.0625, "path": "autograd"}}  # fmt: skip
    for task, n_steps in (("mnist", 8), ("xor-cluster", 4)):
        ga = {"name": "grokalign", **preset_reg_defaults(task)["grokalign"]}
        with tempfile.TemporaryDirectory() as tmp:
            runs = {"plain": trainer(Path(tmp) / "plain", task, [])}
            runs |= {k: trainer(Path(tmp) / k.replace(",", "_"), task, [{**ga, **v}])
                     for k, v in settings.items()}  # fmt: skip
        bs = min(int(runs["plain"].cfg.train.get("batch_size") or 10**9), len(runs["plain"].x))
        cases = {}
        for k, tr in runs.items():
            x, y = tr.x[:bs], tr.y[:bs]
            cases[k] = lambda tr=tr, x=x, y=y, n=n_steps: [tr.train_step(x, y) for _ in range(n)]
        med = interleaved(cases, reps, torch.device(DEV))
        print(f"{task}: batch {bs}, {ga}, {reps} reps of {n_steps} steps (wall-clock, synced)")
        for k, v in med.items():
            print(f"  {k:<26} {v / n_steps * 1e3:8.3f} ms per step  {v / med['plain']:5.2f}x plain")


def classes(reps: int, n: int = 64) -> None:
    cuda = DEV == "cuda"

    def run(fn):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if cuda else 0
        best = min(sync_time(fn) for _ in range(reps))
        return best, (torch.cuda.max_memory_allocated() - base) if cuda else 0

    for name, make, shape in (("mlp", mlp, (3072,)), ("cnn", cnn, (3, 32, 32))):
        cost = {}
        for c in (10, 100, 1000):
            torch.manual_seed(0)
            net = make(c).to(DEV)
            x, y = torch.randn(n, *shape, device=DEV), torch.randint(0, c, (n,), device=DEV)
            t, mem = run(lambda: alignctl.measure(net, x, y, device=DEV))  # noqa: B023
            cost[c] = t
            line = f"{name} C={c:5d}: {t / n * 1e3:8.3f} ms {mem / n / 2**20:8.2f} MiB per sample"
            if c == 1000:
                got = alignctl.measure(net, x, y, device=DEV)
                te, _ = run(lambda: alignctl.measure(net, x, y, device=DEV, sketch=0))  # noqa: B023
                ref = alignctl.measure(net, x, y, device=DEV, sketch=0)
                errs = {k: ((got[k].double() - ref[k].double()).abs() / ref[k].double().abs())
                        for k in ("jacobian_norm", "jacobian_pc1")}  # fmt: skip
                line += f" | exact {te / n * 1e3:.3f} ms | sketch rel. error mean/max " + ", ".join(
                    f"{k} {e.mean():.2%}/{e.max():.2%}" for k, e in errs.items()
                )
            print(line, flush=True)
        print(f"{name} cost(C=1000)/cost(C=10) {cost[1000] / cost[10]:.2f}, "
              f"C=100 {cost[100] / cost[10]:.2f}")  # fmt: skip
        cen = {}
        for c in (10, 50_000):
            torch.manual_seed(0)
            net, x = make(c).to(DEV), torch.randn(n, *shape, device=DEV)
            cen[c] = run(lambda: alignctl.measure(net, x, metrics=["centroid_alignment"],  # noqa: B023
                                                  device=DEV))[0]  # fmt: skip
        ms = {c: t / n * 1e3 for c, t in cen.items()}
        print(f"{name} centroid: C=10 {ms[10]:.3f} ms, C=50000 {ms[50_000]:.3f} ms per sample "
              f"({cen[50_000] / cen[10]:.2f}x)")  # fmt: skip
    try:
        import torchvision
    except ImportError:
        print("resnet18: torchvision not installed")
        return
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=1000).to(DEV).eval()
    x, y = torch.randn(16, 3, 224, 224, device=DEV), torch.randint(0, 1000, (16,), device=DEV)
    t, mem = run(lambda: alignctl.measure(net, x, y, device=DEV))
    tc, _ = run(lambda: alignctl.measure(net, x, metrics=["centroid_alignment"], device=DEV))
    print(f"resnet18 3x224x224 C=1000: all metrics {t / 16 * 1e3:.1f} ms, {mem / 16 / 2**20:.0f} "
          f"MiB per sample; centroid {tc / 16 * 1e3:.1f} ms per sample")  # fmt: skip


def monitor(reps: int) -> None:
    from monitor_overhead import Loop

    with tempfile.TemporaryDirectory() as tmp:
        plain, watched = Loop(False, Path(tmp) / "p", DEV), Loop(True, Path(tmp) / "m", DEV)
        plain.segment(500), watched.segment(500)  # warm-up
        ratios = []
        for _ in range(reps):
            tp = sync_time(lambda: plain.segment(500))
            tw = sync_time(lambda: watched.segment(500))
            ratios.append(tw / tp)
            step = tp / 500
        print(f"monitor (MNIST network, every=100, fast, 512 probe): {reps} pairs of 500 steps, "
              f"median ratio {statistics.median(ratios):.4f} (min {min(ratios):.4f}, max "
              f"{max(ratios):.4f}); a plain step {step * 1e3:.3f} ms")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--only", choices=("steps", "classes", "monitor"))
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script")
    ap.add_argument("--samples", type=int, default=64, help="classes: samples per model")
    args = ap.parse_args()
    global DEV
    DEV = args.device
    if DEV == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: nothing to measure (run this on a GPU machine)")
        return
    where = torch.cuda.get_device_name(0) if DEV == "cuda" else "CPU (dry run)"
    print(f"{where}, torch {torch.__version__}", flush=True)
    jobs = {"steps": lambda: steps(args.reps), "monitor": lambda: monitor(args.reps),
            "classes": lambda: classes(args.reps, args.samples)}  # fmt: skip
    for name, fn in jobs.items():
        if args.only in (None, name):
            t0 = time.perf_counter()
            fn()
            print(f"[{name}: {time.perf_counter() - t0:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
