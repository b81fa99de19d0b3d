"""Memory stays flat while streaming over many checkpoints.

Writes N checkpoints of an MLP (~1 MB of float32 weights each) to a temporary folder, then
discovers them and reads + strictly loads them one at a time, as ``alignctl analyze`` does.
Prints the growth of peak RSS (``resource.getrusage``, Linux: KiB) and of live Python
allocations (tracemalloc) after the first 10 checkpoints and after all N: with nothing cached
both stay flat between the two.

    python benchmarks/checkpoint_memory.py [N]

``--big``: one ~1 GiB safetensors checkpoint (an MLP of four 8192x8192 float32 layers),
loaded into its model by ``Run.load_checkpoint`` (streamed tensor by tensor) and, for
comparison, by the state-dict path (``read_checkpoint`` + ``load_weights``), each in a fresh
subprocess so that nothing earlier counts. Prints peak RSS (``ru_maxrss``) minus the RSS
after the imports, over the checkpoint's size: the model's own weights are 1.0 of it, so
1.0 means loading added nothing. The file is deleted afterwards.

    python benchmarks/checkpoint_memory.py --big [WIDTH]

``WIDTH`` (default 8192) is the layers' width: a small one (256) checks the script in seconds.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch

from alignctl.runs.checkpoints import (
    discover_checkpoints,
    load_weights,
    read_checkpoint,
    write_checkpoint,
)


def make_model() -> torch.nn.Module:
    # 256*512 + 512*256 + 256*10 weights ~ 265k floats ~ 1.04 MB
    return torch.nn.Sequential(
        torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256),
        torch.nn.ReLU(), torch.nn.Linear(256, 10),
    )  # fmt: skip


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(n: int = 1000) -> None:
    torch.manual_seed(0)
    model = make_model()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        for step in range(n):
            with torch.no_grad():
                model[0].weight.add_(0.01)  # distinct contents per checkpoint
            path = folder / f"step_{step}.safetensors"
            write_checkpoint(path, model.state_dict(), {"step": step})
        size = (folder / "step_0.safetensors").stat().st_size / 2**20
        print(f"wrote {n} checkpoints of {size:.2f} MiB in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        refs = discover_checkpoints(folder)
        assert [r.step for r in refs] == list(range(n))
        print(f"discovered {len(refs)} in {time.perf_counter() - t0:.2f} s")

        tracemalloc.start()
        rss0 = peak_rss_mib()
        t0 = time.perf_counter()
        for i, ref in enumerate(refs, 1):
            state, _ = read_checkpoint(ref)
            load_weights(model, state, ref.name)
            del state
            if i in (10, n):
                current, peak = tracemalloc.get_traced_memory()
                print(
                    f"after {i:5d} checkpoints: peak RSS growth {peak_rss_mib() - rss0:7.2f} MiB,"
                    f" traced live {current / 2**20:6.2f} MiB, traced peak {peak / 2**20:6.2f} MiB"
                )
        print(f"read+load: {(time.perf_counter() - t0) / n * 1e3:.2f} ms per checkpoint")
        tracemalloc.stop()


BIG_WIDTH, BIG_LAYERS = 8192, 4  # 4 x 8192^2 float32 = 1 GiB


def big_model(width: int = BIG_WIDTH) -> torch.nn.Module:
    layers = [torch.nn.Linear(width, width, bias=False) for _ in range(BIG_LAYERS)]
    return torch.nn.Sequential(*layers)


def rss_now_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def big_child(mode: str, path: str, width: int) -> None:
    """One measurement in this (fresh) process: prints 'ratio load_only seconds'."""
    from alignctl.runs.checkpoints import CheckpointRef
    from alignctl.runs.run import Run

    base = rss_now_mib()
    with torch.device("meta"):
        model = big_model(width)
    model = model.to_empty(device="cpu")  # uninitialised: the weights come from the file
    for p in model.parameters():
        p.detach().zero_()  # touch every page, as a model that was built would have
    before = rss_now_mib()
    ref = CheckpointRef(Path(path), Path(path).name, 0)
    t0 = time.perf_counter()
    if mode == "stream":
        Run(root=Path(path).parent, config=None, checkpoints=[ref]).load_checkpoint(model, ref)
    else:
        state, _ = read_checkpoint(ref)
        load_weights(model, state, ref.name)
        del state
    seconds = time.perf_counter() - t0
    assert float(model[0].weight[0, 0]) != 0.0
    size = Path(path).stat().st_size / 2**20
    print(f"{(peak_rss_mib() - base) / size:.3f} {(peak_rss_mib() - before) / size:.3f} "
          f"{seconds:.2f}")  # fmt: skip


def big(width: int = BIG_WIDTH) -> None:
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "step_0.safetensors"
        torch.manual_seed(0)
        write_checkpoint(path, big_model(width).state_dict(), {"step": 0})
        size = path.stat().st_size
        print(f"checkpoint: {size / 2**30:.2f} GiB ({BIG_LAYERS} x {width}^2 float32)")
        for mode in ("stream", "state-dict"):
            out = subprocess.run(
                [sys.executable, __file__, "--big-child", mode, str(path), str(width)],
                check=True, capture_output=True, text=True,
            ).stdout.split()  # fmt: skip
            ratio, load_only, seconds = map(float, out[-3:])
            print(f"{mode:>10}: peak RSS / checkpoint size {ratio:.2f} (the model's weights "
                  f"1.00 of it; loading added {load_only:.2f}), {seconds:.1f} s")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["--big"]:
        big(int(sys.argv[2]) if len(sys.argv) > 2 else BIG_WIDTH)
    elif sys.argv[1:2] == ["--big-child"]:
        big_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
