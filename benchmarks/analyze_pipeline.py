"""Where ``alignctl analyze`` spends its time on a 50-checkpoint run (issue 17, item 6).

Builds an MNIST-shaped run in a temporary folder (MLP 784-196-196-196-10 without bias, the
mnist preset's network; 1024 training and 10000 test samples, uniform pixels, labels from a
fixed random teacher: nothing is downloaded, the costs depend on the shapes only) with 50
checkpoints, then times one ``alignctl analyze RUN --metrics standard --json FILE`` in a fresh
process and, inside it, the phases: start-up (interpreter, imports, CLI), opening the run and
the data, reading checkpoints, predicting (train and test accuracy), measure(), the rest.

    nice -n 10 python benchmarks/analyze_pipeline.py [--checkpoints 50]

Prints CPU seconds and shares (CPU time, not wall-clock: on a shared machine wall-clock
varies with the load far more than the split does), and the rows predicted and their
forward passes' GFLOP/s; one thread (``--threads 1``), the cache off (``--no-cache``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PROBE = r"""
import json, sys, time
t0 = time.process_time()
from collections import defaultdict
spent = defaultdict(float)

def timed(owner, name, key):
    inner = getattr(owner, name)
    def wrapper(*a, **k):
        s = time.process_time()
        try:
            return inner(*a, **k)
        finally:
            spent[key] += time.process_time() - s
    setattr(owner, name, wrapper)

from alignctl.cli.common import heavy_imports
with heavy_imports():  # as the analyze command imports them (alignctl/cli/common.py)
    import alignctl.evaluation.accuracy as acc
    import alignctl.geometry.measure as gm
    import alignctl.runs.run as rr
    from alignctl.cli.assemble import main
timed(gm, "measure", "measure")
timed(acc, "predict", "predict")
timed_predict = acc.predict
def counted(model, x, *a, **k):
    spent["predicted_rows"] += len(x)
    return timed_predict(model, x, *a, **k)
acc.predict = counted
timed(rr.Run, "load_checkpoint", "checkpoints")
timed(rr.Run, "load_data", "data")
timed(rr, "open_run", "open")
imported = time.process_time() - t0
sys.argv[0] = "alignctl"
try:
    main()  # the console script: exits with the command's code
except SystemExit as e:
    if e.code:
        raise
finally:
    total = time.process_time() - t0
    print(json.dumps({"imports": imported, "in_process": total, **spent}), file=sys.stderr)
"""


def make_run(root: Path, n_checkpoints: int, n_in: int = 784, n_train: int = 1024,
             n_test: int = 10000, hidden=(196, 196, 196)) -> None:  # fmt: skip
    """The benchmark's run (the defaults) or a smaller one of the same kind (the tests)."""
    import torch
    import yaml

    from alignctl.runs.checkpoints import write_checkpoint
    from alignctl.runs.models import build_model

    g = np.random.default_rng(0)
    x = g.random((n_train + n_test, n_in), dtype=np.float32)
    y = ((x - 0.5) @ g.normal(size=(n_in, 10))).argmax(1)
    np.savez(root / "data.npz", x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:],
             y_test=y[n_train:])  # fmt: skip
    model = {"arch": "mlp", "in_features": n_in, "hidden": list(hidden), "out_features": 10,
             "bias": False}  # fmt: skip
    (root / "alignctl.yaml").write_text(yaml.safe_dump({"model": model,
                                                        "data": {"path": "data.npz"}}))  # fmt: skip
    net = build_model(model, root)
    for step in range(n_checkpoints):
        torch.manual_seed(step)
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(0.99).add_(0.01 * torch.randn_like(p))
        write_checkpoint(root / "checkpoints" / f"step_{step:08d}.safetensors",
                         net.state_dict(), {"step": step})  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoints", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "run"
        root.mkdir()
        make_run(root, args.checkpoints)
        argv = ["analyze", str(root), "--metrics", "standard", "--threads", "1", "--no-cache",
                "--json", str(Path(tmp) / "r.json"), "-q"]  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True,
                              text=True)  # fmt: skip
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        parts = json.loads(proc.stderr.strip().splitlines()[-1])
    startup = wall - parts["in_process"] + parts["imports"]
    measured = {"start-up (interpreter, imports)": startup,
                "open the run + data": parts.get("open", 0) + parts.get("data", 0),
                "read checkpoints": parts.get("checkpoints", 0),
                "predict (train + test accuracy)": parts.get("predict", 0),
                "measure()": parts.get("measure", 0)}  # fmt: skip
    measured["the rest (verdicts, report, output)"] = wall - sum(measured.values())
    print(f"alignctl analyze, {args.checkpoints} checkpoints of the MNIST MLP, 1024 samples "
          f"measured, 10000 test samples: {wall:.2f} s of CPU time")  # fmt: skip
    for k, v in measured.items():
        print(f"  {k:40s} {v:7.2f} s  {100 * v / wall:5.1f}%")
    rows = int(parts.get("predicted_rows", 0))
    flops = 2 * (784 * 196 + 196 * 196 * 2 + 196 * 10)  # multiply-adds of one forward pass
    gflops = rows * flops / max(parts.get("predict", 0), 1e-9) / 1e9
    print(f"  predicted {rows} rows at {gflops:.0f} GFLOP/s (train accuracy from measure()'s "
          f"logits after the first checkpoint: {args.checkpoints} x 10000 + 1024)")  # fmt: skip


if __name__ == "__main__":
    main()
