"""Geometry engine benchmark: ratios measured in one run (interleaved repetitions, medians).

    python benchmarks/geometry.py [--reps 7] [--device auto] [--skip-memory] [--smoke]

Prints
  1. all metrics / one batched Jacobian (C vector-Jacobian products: the floor),
  2. speed-up over the per-sample torch.autograd.functional.jacobian loop that the public
     reference code uses,
  3. centroid metrics alone / one forward+backward pass,
on an MLP 784-196-196-196-10 without bias and 1024 samples, and
  4. peak memory while measuring 10,000 CIFAR-shaped samples (3x32x32, C = 10) with the
     default memory budget (CPU: resident-set growth sampled every 2 ms; CUDA: allocator peak),
  5. the same for --metrics fast and standard on 2048 STL-shaped samples (3x96x96),
  6. what the run-time verification of the fast paths costs: all metrics on the MLP with the
     checks / with the checks switched off.

``--smoke``: every size cut to a few samples (one repetition): checks that the script runs;
its figures mean nothing.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch
from torch import nn

import alignctl
from alignctl.geometry.devices import resolve_device

CENTROID = ["centroid_alignment", "centroid_inner", "centroid_norm"]
# samples: the MLP's, the per-sample loop's slice, the CNN's; the memory cases' (n, side)
SIZES = {"mlp": 1024, "loop": 128, "cnn": 512, "cifar": (10_000, 32), "stl": (2048, 96)}
SMOKE = {"mlp": 32, "loop": 4, "cnn": 16, "cifar": (64, 32), "stl": (8, 96)}


def mlp() -> nn.Module:
    dims = [784, 196, 196, 196, 10]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:], strict=False):
        layers += [nn.Linear(a, b, bias=False), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def interleaved(cases: dict, reps: int, device) -> dict[str, float]:
    """Median seconds of each case, the cases run round-robin so drift hits all alike."""
    for fn in cases.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(reps):
        for k, fn in cases.items():
            times[k].append(timed(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}


def per_sample_loop(model, x, y) -> None:
    """The public reference code's way: one autograd.functional.jacobian call per sample."""
    for i in range(x.shape[0]):
        J = torch.autograd.functional.jacobian(lambda a: model(a.unsqueeze(0))[0], x[i])
        s = torch.linalg.svdvals(J)
        (s[0] ** 2 / (s**2).sum()).item()


def forward_backward(model, x) -> None:
    xg = x.detach().requires_grad_(True)
    torch.autograd.grad(model(xg).sum(), xg)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _cnn(device, side: int) -> nn.Module:
    torch.manual_seed(0)
    flat = 64 * (side // 4) ** 2
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(flat, 256), nn.ReLU(), nn.Linear(256, 10),
    ).to(device)  # fmt: skip


def peak_memory(device, n=10_000, side=32, metrics=None) -> tuple[float, int]:
    """:func:`_peak_memory` in a fresh process: in this one, memory the allocator kept from
    the cases before moved the peak above the baseline between 174 and 740 MiB for one case."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_peak_memory, (str(device), n, side, metrics))


def _peak_memory(device, n=10_000, side=32, metrics=None) -> tuple[float, int]:
    """(peak bytes above the baseline while measuring, largest chunk seen)."""
    device = torch.device(device)
    model = _cnn(device, side)
    x = torch.rand(n, 3, side, side)
    y = torch.randint(0, 10, (n,))
    # a fresh process's first measurement also loads kernels and starts threads: not the data's
    alignctl.measure(model, x[:2], y[:2], device=device, metrics=metrics)
    seen = []
    model.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        alignctl.measure(model, x, y, device=device, metrics=metrics)
        return torch.cuda.max_memory_allocated() - base, max(seen)
    base, peak, done = rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.002)

    t = threading.Thread(target=sample)
    t.start()
    alignctl.measure(model, x, y, device=device, metrics=metrics)
    done.set()
    t.join()
    return peak[0] - base, max(seen)


def verification_cost(model, x, y, reps, device) -> float:
    """all metrics with the first-chunk checks / without them (checks patched out)."""
    import alignctl.geometry.verify as v  # chunk.py calls the checks through this module

    def unchecked():
        saved = (v.check_shortcut, v.check_spectrum)
        v.check_shortcut = v.check_spectrum = lambda *a: None
        try:
            alignctl.measure(model, x, y, device=device)
        finally:
            v.check_shortcut, v.check_spectrum = saved

    t = interleaved(
        {"checked": lambda: alignctl.measure(model, x, y, device=device), "unchecked": unchecked},
        reps,
        device,
    )
    return t["checked"] / t["unchecked"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: a check, not a figure")
    args = ap.parse_args()
    size = SMOKE if args.smoke else SIZES
    args.reps = 1 if args.smoke else args.reps
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = mlp().to(device).eval()
    n = size["mlp"]
    x = torch.randn(n, 784, device=device)
    y = torch.randint(0, 10, (n,), device=device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    n_loop = size["loop"]  # the per-sample loop is slow: time a slice and scale to n samples
    t = interleaved(
        {
            "jacobian": lambda: alignctl.jacobian(model, x, device=device),
            "all": lambda: alignctl.measure(model, x, y, device=device),
            "centroid": lambda: alignctl.measure(model, x, metrics=CENTROID, device=device),
            "fwd_bwd": lambda: forward_backward(model, x),
            # in the same rounds as the rest: timed apart, the machine's load moved the
            # speed-up between 7x and 28x on one day
            "loop": lambda: per_sample_loop(model, x[:n_loop], y[:n_loop]),
        },
        args.reps,
        device,
    )
    loop = t.pop("loop") * (n / n_loop)
    for k, v in t.items():
        print(f"  {k:<9} {v * 1e3:8.2f} ms")
    print(f"  per-sample loop (reference code) {loop * 1e3:8.1f} ms (from {n_loop} samples)")
    print(f"all metrics / one batched Jacobian: {t['all'] / t['jacobian']:.3f}  (target <= 1.2)")
    print(f"speed-up over the per-sample loop:  {loop / t['all']:.1f}x  (must be >= 30x)")
    print(
        f"centroid metrics / forward+backward: {t['centroid'] / t['fwd_bwd']:.3f}  (target <= 1.2)"
    )
    # The MLP takes the J = J_h W shortcut (alignctl/linear_input.py); a CNN cannot.
    cnn = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 14 * 14, 128), nn.ReLU(), nn.Linear(128, 10),
    ).to(device)  # fmt: skip
    xc = torch.rand(size["cnn"], 1, 28, 28, device=device)
    yc = torch.randint(0, 10, (size["cnn"],), device=device)
    cases = {
        "jacobian": lambda: alignctl.jacobian(cnn, xc, device=device),
        "all": lambda: alignctl.measure(cnn, xc, yc, device=device),
    }
    tc = interleaved(cases, args.reps, device)
    print(
        f"generic path (CNN, {size['cnn']} MNIST-shaped samples): all metrics / one batched "
        "Jacobian: "
        f"{tc['all'] / tc['jacobian']:.3f}"
    )
    ratio = verification_cost(model, x, y, args.reps, device)
    print(f"run-time verification of the fast paths: all metrics with / without it: {ratio:.3f}")
    if not args.skip_memory:
        n_cifar, side = size["cifar"]
        peak, chunk = peak_memory(device, n=n_cifar, side=side)
        full = n_cifar * 10 * 3 * side * side * 4
        print(
            f"peak memory, {n_cifar:,} CIFAR-shaped samples, C=10, default chunk {chunk}: "
            f"{peak / 2**20:.0f} MiB (the full Jacobian would be {full / 2**20:.0f} MiB)"
        )
        for name, metrics in (("fast", CENTROID), ("standard", None)):
            n_stl, side = size["stl"]
            peak, chunk = peak_memory(device, n=n_stl, side=side, metrics=metrics)
            print(f"peak memory, {n_stl} x 3x{side}x{side}, {name} metrics, chunk {chunk}: "
                  f"{peak / 2**20:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
