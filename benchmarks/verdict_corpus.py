"""The verdict corpus: small training runs, each with its truth, to judge alignctl's verdicts
and recommendations on runs it was not tuned on (issue 13).

    nice -n 10 python benchmarks/verdict_corpus.py --out corpus/            # all runs
    python benchmarks/verdict_corpus.py --out corpus/ --only digits-mlp-adamw
    python benchmarks/verdict_corpus.py --list
    python benchmarks/verdict_corpus.py --out /tmp/c --only gmm-tanh --max-steps 20   # a check

``--max-steps N`` caps every run's steps (epochs for ``alignctl train`` runs) at N: a quick
check that the builder and the scripts reading the corpus run, not the corpus (a run built
with another cap than asked, or none, is built again).

Every run is seeded and cached: a finished run (its ``truth.json`` exists) is skipped, so an
interrupted build loses one run at most. One CPU thread: the 26 runs took 1705 s of wall-clock
time (each run's ``seconds`` in its truth.json) on a 2-core machine shared with other jobs,
about 14 CPU-minutes (user time was half the wall-clock time on a measured subset).

Runs are trained two ways, so the corpus is not only alignctl's own: a plain PyTorch loop
(writing ``.safetensors`` or ``.pt`` state dicts, an ``alignctl.yaml`` naming the network
through the factory protocol, ``models.py``, and the data as ``data.npz``), and
``alignctl train`` (a config file, run as a subprocess). Each run has 12-17 log-spaced
checkpoints (step 0 included).

Truth per checkpoint, from the measured accuracies (chance = 1/C, 0.5 for scalar outputs):
learning when train < 0.9; with train >= 0.99, skill ratio r = (test - chance) / (train -
chance): memorising when r <= 0.3, generalised when r >= 0.85; everything else ambiguous.
Per run, ``accept`` lists the recommendation actions a researcher would take as right.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def truth_label(train: float | None, test: float | None, chance: float) -> str:
    """learning | memorising | generalised | ambiguous | diverged (the issue's definition)."""
    if train is None or test is None or not (math.isfinite(train) and math.isfinite(test)):
        return "diverged"
    if train < 0.9:
        return "learning"
    if train < 0.99:
        return "ambiguous"
    r = (test - chance) / (train - chance)
    return "memorising" if r <= 0.3 else "generalised" if r >= 0.85 else "ambiguous"


from corpus_data import DATA  # noqa: E402
from corpus_runs import CHANGE, RUNS, plain, trained  # noqa: E402, F401  (the builder's API)
from corpus_runs import opt as opt_config  # noqa: E402

# ---------------------------------------------------------------- training


def log_steps(total: int, k: int = 15) -> list[int]:
    """Step 0 and k - 1 steps spaced evenly in log scale up to ``total`` (distinct)."""
    return sorted({0, *(int(round(v)) for v in np.geomspace(1, total, k - 1))})


def _models():
    ns: dict = {}
    exec(compile((HERE / "corpus_models.py").read_text(), "corpus_models.py", "exec"), ns)
    return ns


def _loss(kind, out, y):
    import torch.nn.functional as F

    if out.dim() == 1:  # scalar output, labels -1/+1
        s = y.to(out.dtype)
        return F.softplus(-s * out).mean() if kind == "logistic" else (out - s).pow(2).mean()
    if kind == "mse":
        return (out - F.one_hot(y, out.shape[1]).to(out)).pow(2).sum(1).mean()
    return F.cross_entropy(out, y)


def _accuracy(net, x, y) -> float:
    import torch

    net.eval()
    with torch.no_grad():
        out = net(x)
    net.train()
    if not torch.isfinite(out).all():
        return float("nan")
    pred = (out > 0).long() * 2 - 1 if out.dim() == 1 else out.argmax(1)
    return float((pred == y).float().mean())


def _save(net, path: Path, fmt: str, step: int) -> None:
    import torch

    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    if fmt == "pt":
        torch.save({"model_state_dict": state, "step": step}, path.with_suffix(".pt"))
    else:
        from safetensors.torch import save_file

        save_file(state, str(path.with_suffix(".safetensors")), metadata={"step": str(step)})


def train_plain(spec: dict, folder: Path) -> list[dict]:
    import torch
    import yaml

    arrays, n_classes, input_range = make_data(spec)
    np.savez(folder / "data.npz", **arrays)
    shutil.copy(HERE / "corpus_models.py", folder / "models.py")
    data_cfg = {"path": "data.npz", "num_classes": n_classes}
    if input_range:
        data_cfg["input_range"] = input_range
    cfg = {
        "model": {"factory": "models.py:make_net", "kwargs": spec["model"]},
        "data": data_cfg,
        "train": {
            "loss": {"ce": "cross_entropy"}.get(spec["loss"], spec["loss"]),
            "optimizer": opt_config(spec["opt"], spec["lr"], spec["wd"], spec["momentum"]),
            "seed": spec["seed"],
        },  # fmt: skip
    }
    (folder / "alignctl.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    t = {k: torch.as_tensor(v) for k, v in arrays.items()}
    torch.manual_seed(spec["seed"])
    net = _models()["make_net"](**spec["model"])
    if spec["opt"] == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=spec["lr"], momentum=spec["momentum"],
                              weight_decay=spec["wd"])  # fmt: skip
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=spec["lr"], weight_decay=spec["wd"])
    (folder / "checkpoints").mkdir()
    gen = torch.Generator().manual_seed(spec["seed"])
    n, saves, rows = len(t["x_train"]), set(log_steps(spec["steps"])), []
    for step in range(spec["steps"] + 1):
        if step in saves:
            _save(net, folder / "checkpoints" / f"step_{step:06d}", spec["fmt"], step)
            rows.append({"step": step, "train": _accuracy(net, t["x_train"], t["y_train"]),
                         "test": _accuracy(net, t["x_test"], t["y_test"])})  # fmt: skip
        if step == spec["steps"]:
            break
        idx = torch.randperm(n, generator=gen)[: spec["batch"]] if spec["batch"] else slice(None)
        opt.zero_grad()
        _loss(spec["loss"], net(t["x_train"][idx]), t["y_train"][idx]).backward()
        opt.step()
    return rows


def train_alignctl(spec: dict, folder: Path, scratch: Path) -> list[dict]:
    import yaml
    from safetensors import safe_open

    cfg = json.loads(json.dumps(spec["config"]))
    if spec["data"]:
        arrays, n_classes, input_range = make_data(spec)
        path = scratch / f"{spec['name']}.npz"
        np.savez(path, **arrays)
        cfg["data"] = {"path": str(path.resolve()), "num_classes": n_classes}
        if input_range:
            cfg["data"]["input_range"] = input_range
    cfg_path = scratch / f"{spec['name']}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "alignctl", "train", "--config", str(cfg_path), "--out",
           str(folder), "--epochs", str(spec["epochs"]), "--save-schedule", "log:15",
           "--device", "cpu", "--quiet", "--force"]  # fmt: skip
    subprocess.run(cmd, check=True, env=env)
    shutil.rmtree(folder / "checkpoints" / "state", ignore_errors=True)
    rows = []
    for f in sorted((folder / "checkpoints").glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            m = h.metadata()
        rows.append({"step": int(m["step"]), "train": float(m["train_accuracy"]),
                     "test": float(m["test_accuracy"])})  # fmt: skip
    return sorted(rows, key=lambda r: r["step"])


def make_data(spec: dict):
    """(arrays, n_classes, input_range); the data's seed is its own ``seed`` or the run's."""
    kw = dict(spec["data_kw"])
    return DATA[spec["data"]](kw.pop("seed", spec["seed"]), **kw)


def truth_files(corpus: Path) -> list[Path]:
    """The corpus's runs (their truth.json files, sorted); without any, an ``error:`` line and
    exit 2 (the scripts that read a corpus have nothing to measure)."""
    found = sorted(corpus.glob("*/truth.json"))
    if not found:
        print(f"error: no corpus runs (*/truth.json) in {corpus}: build them with "
              f"python benchmarks/verdict_corpus.py --out {corpus}", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    return found


def chance_of(n_classes: int) -> float:
    return 0.5 if n_classes <= 2 else 1.0 / n_classes


def build(spec: dict, out: Path) -> dict:
    """Train one run into ``out/NAME`` unless its truth.json exists; returns the truth."""
    folder = out / spec["name"]
    done = folder / "truth.json"
    if done.exists():
        truth = json.loads(done.read_text())
        if truth.get("max_steps") == spec.get("max_steps"):
            return truth
    import torch

    torch.set_num_threads(1)
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    if spec["loop"] == "plain":
        folder.mkdir(parents=True)
        rows = train_plain(spec, folder)
    else:
        scratch = out / "_configs"
        scratch.mkdir(parents=True, exist_ok=True)
        rows = train_alignctl(spec, folder, scratch)
    n_classes = _n_classes(spec)
    for r in rows:
        r["truth"] = truth_label(r["train"], r["test"], chance_of(n_classes))
    truth = {k: spec[k] for k in ("name", "family", "loop", "accept", "note")}
    if spec.get("max_steps"):
        truth["max_steps"] = spec["max_steps"]
    truth.update(n_classes=n_classes, seconds=round(time.perf_counter() - t0, 1), checkpoints=rows)
    done.write_text(json.dumps(truth, indent=1))
    return truth


def _n_classes(spec: dict) -> int:
    if spec["data"]:
        return make_data(spec)[1]
    return int(spec["config"]["model"]["out_features"])


def capped(spec: dict, cap: int | None) -> dict:
    """The run with its steps (plain loop) or epochs (``alignctl train``) capped at ``cap``."""
    if not cap:
        return spec
    key = "steps" if spec["loop"] == "plain" else "epochs"
    return {**spec, key: min(spec[key], cap), "max_steps": cap}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("corpus"))
    ap.add_argument("--only", nargs="*", help="run names (default: all)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--max-steps", type=int, help="cap each run's steps/epochs (a quick check)")
    args = ap.parse_args(argv)
    runs = [capped(r, args.max_steps) for r in RUNS if not args.only or r["name"] in args.only]
    if args.list or not runs:
        for r in RUNS:
            print(
                f"{r['name']:<28} {r['family']:<15} {r['loop']:<8} accept {'/'.join(r['accept'])}"
            )
        return
    for spec in runs:
        truth = build(spec, args.out)
        ck = truth["checkpoints"]
        traj = " ".join(f"{c['train']:.2f}/{c['test']:.2f}" for c in ck[:: max(1, len(ck) // 6)])
        last = f"{ck[-1]['train']:.3f}/{ck[-1]['test']:.3f} {ck[-1]['truth']}"
        print(f"{spec['name']:<28} {truth['seconds']:>6.1f}s {len(ck)} ckpts  {traj}  last {last}")


if __name__ == "__main__":
    main()
