"""CPU against CUDA: the same metrics on the same weights, and the throughput of each.

For an MLP (784-196-196-196-10 without bias), a CNN (3x32x32, two conv layers) and a token
model (embedding + MLP), measures every default metric on 512 samples on the CPU and on the
GPU (float32, TF32 off: ``alignctl.measure`` switches it off while measuring) and prints the
largest relative difference per metric (float32 agreement is expected near 1e-5; a metric
far beyond 1e-3 is a bug) and samples per second on each device (after a warm-up, with
``torch.cuda.synchronize``).

    python benchmarks/gpu_agreement.py

Without a CUDA device it says so and exits 0: there is nothing to compare.
"""

from __future__ import annotations

import time

import torch

import alignctl


def models() -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    mlp = alignctl.MODELS.get("mlp")(784, [196, 196, 196], 10, bias=False)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(), torch.nn.Linear(512, 10),
    )  # fmt: skip
    tokens = torch.nn.Sequential(
        torch.nn.Embedding(64, 16), torch.nn.Flatten(), torch.nn.Linear(16 * 8, 64),
        torch.nn.ReLU(), torch.nn.Linear(64, 10),
    )  # fmt: skip
    return {
        "mlp": (mlp, torch.rand(512, 784, generator=g)),
        "cnn": (cnn, torch.rand(512, 3, 32, 32, generator=g)),
        "tokens": (tokens, torch.randint(0, 64, (512, 8), generator=g)),
    }


def timed(fn, device: str, reps: int = 3) -> float:
    fn()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to compare (run this on a GPU machine)")
        return
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    for name, (model, x) in models().items():
        y = torch.randint(0, 10, (len(x),), generator=torch.Generator().manual_seed(1))
        cpu = alignctl.measure(model, x, y, device="cpu")
        gpu = alignctl.measure(model.cuda(), x, y, device="cuda")
        model.cpu()
        worst = []
        for k in cpu:
            a, b = cpu[k].double(), gpu[k].double()
            rel = ((a - b).abs() / a.abs().clamp_min(1e-12)).max().item()
            worst.append(f"{k} {rel:.1e}")
        t_cpu = timed(lambda m=model, x=x, y=y: alignctl.measure(m, x, y, device="cpu"), "cpu")
        model.cuda()
        t_gpu = timed(lambda m=model, x=x, y=y: alignctl.measure(m, x, y, device="cuda"), "cuda")
        model.cpu()
        print(f"{name}: largest relative difference CPU vs GPU: " + ", ".join(worst))
        print(f"{name}: samples/s CPU {len(x) / t_cpu:,.0f}, GPU {len(x) / t_gpu:,.0f} "
              f"({t_cpu / t_gpu:.1f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
