"""The XOR cluster's training step with GrokAlign every step, every k steps and on a random
subset of the batch, in CPU time.

    nice -n 10 python benchmarks/xor_step.py [--reps 3] [--every 1,4] [--subsample 0.25,0.125]
        [--combos "subsample=0.0625,every=2"] [--task PRESET] [--epochs BASE,E1,...] [--smoke]

The xor-cluster preset (two-layer bias-free MLP 40000-2048-1, squared error, full-batch SGD
on 400 samples; GrokAlign lambda 1.0), or another preset with ``--task`` (its lambda): 4
consecutive real ``Trainer.train_step`` calls (4, a multiple of every k timed) of each setting
over 4 plain ones, the cases interleaved, medians of CPU time (this process; on a shared
machine wall-clock of the same work varies by more than the differences measured).
``every=k`` is lazy GrokAlign, ``subsample=f`` the penalty on a random fraction f of the batch;
each through the ReLU chain (``path=auto``, the default: weight products with the batch's own
masks, no double backward, :mod:`alignctl.train.relu_chain`) and through autograd
(``,autograd``: a create-graph VJP and its double backward; the subset's rows forwarded again
on their own), ``--paths`` choosing. Two alternatives, not in src/ (XOR only):
``sliced=f``, the subset's outputs sliced out of the full batch's forward, so the VJP and the
double backward run through the full-batch graph (zero rows included); and ``stacked=f``, the
subset's rows appended to the batch in one forward (no second small forward, and the zero
gradient that ReLU's double backward sends back through the subset's first layer joins the
batch's own weight-gradient product instead of a product and a sum of its own). With
``--epochs BASE,OTHER,...`` (a race's mean epochs to grok for the ``--base`` case, plain by
default, then for each other case in the order printed) it prints the wall-clock speed-up
those imply: BASE/epochs x base step/step. ``--smoke``: the XOR cluster shrunk to inputs of
200 and a hidden layer of 64, one repetition: checks that the script runs, not a figure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from alignctl.runs.config import config_from_dict
from alignctl.train.presets import PRESETS, preset_reg_defaults
from alignctl.train.trainer import Trainer

STEPS = 4
SHRINK: dict = {}  # --smoke: the XOR cluster's input and hidden widths replaced


def trainer(folder: Path, regularisers: list, task: str = "xor-cluster") -> Trainer:
    d = PRESETS.get(task)()
    d["train"]["regularisers"] = regularisers
    if SHRINK and task == "xor-cluster":
        d["model"].update(in_features=SHRINK["dim"], hidden=[SHRINK["hidden"]])
        d["data"]["dim"] = SHRINK["dim"]
    return Trainer(folder, config_from_dict(d, folder), "cpu")


def subset(n: int, fraction: float) -> torch.Tensor:
    return torch.randperm(n)[: max(1, round(fraction * n))]


def penalty_of_rows(reg, xg, out_rows, rows=None) -> torch.Tensor:
    """lambda * mean sqrt(norm(J)_F^2) for a scalar-output model (one projection is exact);
    ``rows``: which rows of xg's gradient belong to out_rows (None: all)."""
    (g,) = torch.autograd.grad(out_rows, xg, torch.ones_like(out_rows), create_graph=True)
    g = g if rows is None else g[rows]
    return reg.lam * g.reshape(g.shape[0], -1).pow(2).sum(1).clamp_min(reg.eps).sqrt().mean()


def combo(text: str) -> dict:
    """'subsample=0.0625,every=2' -> {'subsample': 0.0625, 'every': 2}."""
    out = {}
    for item in text.split(","):
        key, value = item.split("=")
        out[key.strip()] = int(value) if key.strip() == "every" else float(value)
    return out


def update(tr: Trainer, loss) -> None:
    tr.opt.zero_grad(set_to_none=True)
    loss.backward(inputs=tr.params)
    tr.opt.step()


def sliced_step(tr: Trainer, x, y, fraction: float) -> None:
    """The penalty on a random subset whose outputs are sliced from the full forward."""
    tr.model.train()
    idx = subset(x.shape[0], fraction)
    xg = x.detach().requires_grad_(True)
    out = tr.model(xg.clone())
    update(tr, tr.loss_fn(out, y) + penalty_of_rows(tr.regs[0], xg, out[idx], idx))


def stacked_step(tr: Trainer, x, y, fraction: float) -> None:
    """The subset's rows appended to the batch: one forward of n + m rows (its first layer one
    matmul), the loss on the first n outputs, the penalty on the last m. Not for models whose
    layers couple samples (BatchNorm): the loss would see the appended rows."""
    tr.model.train()
    n, idx = x.shape[0], subset(x.shape[0], fraction)
    xs = x[idx].detach().requires_grad_(True)
    out = tr.model(torch.cat([x, xs]))
    update(tr, tr.loss_fn(out[:n], y) + penalty_of_rows(tr.regs[0], xs, out[n:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--every", default="1,4")
    ap.add_argument("--subsample", default="0.25,0.125,0.0625")
    ap.add_argument("--sliced", default="0.125", help="fractions for the sliced variant ('' none)")
    ap.add_argument("--stacked", default="0.125,0.0625", help="fractions, the stacked variant")
    ap.add_argument(
        "--paths",
        default="auto,autograd",
        help="GrokAlign's path for every case: auto (the ReLU chain), autograd",
    )
    ap.add_argument(
        "--combos",
        default="",
        help="settings combining options, ';'-separated, each 'key=v,key=v' (e.g. "
        "'subsample=0.0625,every=2')",
    )
    ap.add_argument("--task", default="xor-cluster", help="a preset (alternatives: XOR only)")
    ap.add_argument(
        "--epochs", default="", help="mean epochs to grok: BASE, then the others (empty: skip)"
    )
    ap.add_argument("--base", default="plain", help="the case --epochs starts with")
    ap.add_argument("--smoke", action="store_true", help="tiny XOR cluster: a check")
    args = ap.parse_args()
    if args.smoke:
        SHRINK.update(dim=200, hidden=64)
        args.reps = 1
    torch.set_num_threads(1)
    ks = [int(k) for k in args.every.split(",") if k]
    fs = [float(f) for f in args.subsample.split(",") if f]
    alt = [("sliced", sliced_step, float(f)) for f in args.sliced.split(",") if f]
    alt += [("stacked", stacked_step, float(f)) for f in args.stacked.split(",") if f]
    ap_task = args.task
    if ap_task != "xor-cluster":  # the alternatives assume XOR's scalar output
        alt = []
    ga = {"name": "grokalign", **preset_reg_defaults(ap_task)["grokalign"]}
    with tempfile.TemporaryDirectory() as tmp:
        plain = trainer(Path(tmp) / "plain", [], ap_task)
        settings = [{"every": k} for k in ks] + [{"subsample": f} for f in fs]
        settings += [combo(c) for c in args.combos.split(";") if c]
        runs = {}
        for path in args.paths.split(","):
            for opts in settings:
                name = ",".join(f"{k}={v:g}" for k, v in opts.items())
                name += "" if path == "auto" else f",{path}"
                spec = {**ga, **opts, "path": path}
                runs[name] = trainer(Path(tmp) / name.replace(",", "_"), [spec], ap_task)
        other = {f"{name}={f:g}": (trainer(Path(tmp) / f"{name}{f}", [ga]), fn, f)
                 for name, fn, f in alt}  # fmt: skip
    x, y = plain.data.x_train, plain.data.y_train
    cases = {"plain": lambda: plain.train_step(x, y)}
    cases |= {name: (lambda tr=tr: tr.train_step(x, y)) for name, tr in runs.items()}
    cases |= {name: (lambda a=a: a[1](a[0], x, y, a[2])) for name, a in other.items()}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for step in cases.values():  # warm-up
        step()
    for _ in range(args.reps):
        for name, step in cases.items():
            t0 = time.process_time()
            for _ in range(STEPS):
                step()
            times[name].append((time.process_time() - t0) / STEPS)
    med = {k: statistics.median(v) for k, v in times.items()}
    shape = "x".join(str(d) for d in x.shape)
    print(f"{ap_task}, batch {shape}, {ga}, one thread, {args.reps} reps of {STEPS} steps")
    for k, v in med.items():
        print(f"  {k:<24} {v * 1e3:8.1f} CPU ms per step  {v / med['plain']:5.2f}x plain")
    if args.epochs:
        base, *others = (float(e or 0) for e in args.epochs.split(","))
        rest = [k for k in med if k != args.base]
        print(f"wall-clock speed-up over {args.base} (BASE/epochs x {args.base}/step):")
        for k, e in zip(rest, others, strict=False):
            if e <= 0:  # an empty entry: no race figure for this case
                continue
            t = base / e * med[args.base] / med[k]
            print(f"  {k:<24} {base / e:5.2f}x epochs  {t:5.2f}x time")


if __name__ == "__main__":
    main()
