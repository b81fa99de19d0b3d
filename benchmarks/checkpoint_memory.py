"""Memory stays flat while streaming over many checkpoints.

Writes N checkpoints of an MLP (~1 MB of float32 weights each) to a temporary folder, then
discovers them and reads + strictly loads them one at a time, as ``alignctl analyze`` does.
Prints the growth of peak RSS (``resource.getrusage``, Linux: KiB) and of live Python
allocations (tracemalloc) after the first 10 checkpoints and after all N: with nothing cached
both stay flat between the two.

    python benchmarks/checkpoint_memory.py [N]
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


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
