"""GrokAlign training-step overhead: ratios measured in one run (interleaved repetitions, medians).

    python benchmarks/train_step.py [--reps 30] [--threads 1] [--subsample 32] [--fractions F,...]
        [--smoke]

The MNIST preset's network (MLP 784-196-196-196-10, no bias, weights x8), AdamW, cross-entropy,
batch 128, on the CPU. Both required cases are alignctl's own ``Trainer.train_step`` on real
Trainers (built from the preset's config and a random data file):

  plain      forward, cross-entropy, backward, AdamW step;
  grokalign  the same with the GrokAlign regulariser (n_proj 1, norm fro), as the Trainer
             takes it: through the ReLU chain (``path=auto``: weight products with the
             batch's masks, a first-order backward; :mod:`alignctl.train.relu_chain`). Must
             be <= 2.2x.
  autograd   the same with ``path=autograd``: one create_graph vector-Jacobian product and
             the double backward.

Alternatives, measured on identical Trainers:

  params-only  the real penalty, backward restricted to the parameters
               (``loss.backward(inputs=params)``), so x.grad, which the input needs only for
               the penalty's own VJP, is not computed. Same weights, bit for bit. Adopted: the
               Trainer does this now, so it times the same as ``grokalign``.
The others are proposals, not in src/:

  subsample    the real penalty on a random ``--subsample`` of the batch (its rows forwarded on
               their own, the rest without input gradients, one forward of the batch in all),
               params-only backward: unbiased, but the batch penalty averages fewer samples.
               (src/ adopts this as ``grokalign:subsample=f`` with a second forward of the
               subset instead, so the loss's forward stays the batch's, timed below.)
  func-jvp     forward mode: torch.func.jvp with a Rademacher probe u in input space,
               E[norm(J u)^2] = norm(J)_F^2, then one first-order backward.
  fused-jvp    the same forward mode written by hand for Linear/ReLU stacks: primal and tangent
               stacked in one batch, so each layer is one matmul of 2n rows (not general).
  fused-sub    fused-jvp with tangents for a random ``--subsample`` of the rows only (n + s rows
               per matmul): the penalty's expectation is fused-jvp's, its variance larger.

Lazy regularisation (``grokalign:every=k``, in src/): the penalty on one step in k, lambda
scaled by k; and the penalty on a random fraction f of the batch (``grokalign:subsample=f``,
in src/). Their amortised cost is timed as 8 consecutive real ``Trainer.train_step`` calls
(8 is a multiple of every k measured) over 8 plain steps, for k in ``--every`` and f in
``--fractions``.

Then, for each estimator, over many draws on one batch: mean of the norm(J)_F^2 estimate / exact
(unbiasedness), relative spread of the batch penalty, and E[sqrt(estimate)] / norm(J)_F (the
``fro`` penalty's expectation: the square root makes every estimator biased, each differently).

Exit status 1 when the GrokAlign step exceeds 2.2x the plain one. ``--smoke``: one repetition,
2 draws, one k and one f: checks that the script runs; its figures mean nothing, so the 2.2x
target is not judged (exit 0).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from geometry import interleaved  # noqa: E402  (the timing protocol of the geometry benchmark)

from alignctl.runs.config import config_from_dict  # noqa: E402
from alignctl.train.presets import PRESETS  # noqa: E402
from alignctl.train.regularisers.grokalign import frobenius_estimate  # noqa: E402
from alignctl.train.trainer import Trainer  # noqa: E402

GROKALIGN = {"name": "grokalign", "lambda": 0.01, "n_proj": 1, "norm": "fro"}
CPU = torch.device("cpu")


def trainers(folder: Path, count: int, regularisers: list) -> list[Trainer]:
    """``count`` identical Trainers (same seed: same weights) for the MNIST preset's network."""
    rng = np.random.default_rng(0)
    np.savez(folder / "data.npz", x_train=rng.random((256, 784), dtype=np.float32),
             y_train=rng.integers(0, 10, 256))  # fmt: skip
    d = PRESETS.get("mnist")()
    d["data"] = {"path": "data.npz", "num_classes": 10, "input_range": [0, 1]}
    d["train"]["regularisers"] = regularisers
    d["grokked"] = {}  # no test split here: the preset's test_acc criterion could never hold
    cfg = config_from_dict(d, folder)
    return [Trainer(folder / f"run{i}", cfg, "cpu") for i in range(count)]


def params_only_step(tr: Trainer, x, y, subsample: int | None = None) -> None:
    """The real GrokAlign penalty; backward only to the parameters."""
    reg, model = tr.regs[0], tr.model
    model.train()
    if subsample is None:
        xs = x.detach().requires_grad_(True)
        out = outs = model(xs)
    else:  # a random subset differentiable in the input; one loss over the whole batch
        perm = torch.randperm(x.shape[0])
        idx, rest = perm[:subsample], perm[subsample:]
        xs = x[idx].requires_grad_(True)
        outs = model(xs)
        out, y = torch.cat([outs, model(x[rest])]), torch.cat([y[idx], y[rest]])
    loss = tr.loss_fn(out, y) + reg.penalty(model, xs, outs, y)
    tr.opt.zero_grad(set_to_none=True)
    params = [p for p in model.parameters() if p.requires_grad]
    loss.backward(inputs=params)
    tr.opt.step()


def rademacher(x: torch.Tensor) -> torch.Tensor:
    return torch.randint(0, 2, x.shape, dtype=x.dtype).mul_(2).sub_(1)  # E[u u^T] = I


def fused_jvp(model: nn.Sequential, x, u, idx=None):
    """(f(x), J(x[idx]) u) for Flatten/Linear(no bias)/ReLU stacks: rows [x; u] share the masks.
    u is (s, d) for the rows ``idx`` of x (all rows when idx is None)."""
    n = x.shape[0]
    idx = torch.arange(n) if idx is None else idx
    h = torch.cat([x.reshape(n, -1), u.reshape(len(idx), -1)])  # (n + s, d)
    for layer in model:
        if isinstance(layer, nn.Linear):
            if layer.bias is not None:
                raise TypeError("fused_jvp: layers with a bias are not supported")
            h = F.linear(h, layer.weight)
        elif isinstance(layer, nn.ReLU):
            mask = (h[:n] > 0).to(h.dtype)
            h = h * torch.cat([mask, mask[idx]])  # the tangent rows take their primal's mask
        elif not isinstance(layer, nn.Flatten):
            raise TypeError(f"fused_jvp: unsupported layer {layer}")
    return h[:n], h[n:]


def forward_mode_step(tr: Trainer, x, y, fused: bool, subsample: int | None = None) -> None:
    reg, model = tr.regs[0], tr.model
    model.train()
    if subsample is not None:
        idx = torch.randperm(x.shape[0])[:subsample]
        out, ju = fused_jvp(model, x, rademacher(x[idx]), idx)
    else:
        u = rademacher(x)
        out, ju = fused_jvp(model, x, u) if fused else torch.func.jvp(model, (x,), (u,))
    est = ju.reshape(ju.shape[0], -1).pow(2).sum(1)
    pen = est.clamp_min(reg.eps).sqrt().mean() if reg.norm == "fro" else est.mean()
    loss = tr.loss_fn(out, y) + reg.lam * pen
    tr.opt.zero_grad(set_to_none=True)
    loss.backward()
    tr.opt.step()


def same_weights(a: Trainer, b: Trainer) -> bool:
    pairs = zip(a.model.parameters(), b.model.parameters(), strict=True)
    return all(torch.equal(p, q) for p, q in pairs)


def estimator_stats(model, x, draws: int, subsample: int) -> dict[str, tuple]:
    """(mean estimate / exact, std / mean of the batch fro penalty, E[sqrt est] / norm(J)_F)."""
    xg = x.detach().requires_grad_(True)
    out = model(xg)
    exact = frobenius_estimate(xg, out, "exact").detach()  # (n,)
    samples = {
        "hoffman (alignctl)": lambda: frobenius_estimate(xg, out, 1),
        "jvp, rademacher": lambda: fused_jvp(model, x, rademacher(x))[1].pow(2).sum(1),
    }
    stats = {}
    for name, draw in samples.items():
        with torch.enable_grad() if "hoffman" in name else torch.no_grad():
            est = torch.stack([draw().detach() for _ in range(draws)])  # (draws, n)
        fro = est.sqrt()
        stats[name] = (est.mean() / exact.mean(), fro.mean(1).std() / fro.mean(1).mean(),
                       (fro.mean(0) / exact.sqrt()).mean())  # fmt: skip
        sub = torch.stack([row[torch.randperm(len(row))[:subsample]] for row in fro])
        stats[f"{name}, subsample {subsample}"] = (
            stats[name][0],
            sub.mean(1).std() / sub.mean(1).mean(),
            stats[name][2],
        )
    return stats


def cheap_costs(args, x, y) -> dict[str, float]:
    """Amortised cost of ``grokalign:every=k`` and ``grokalign:subsample=f`` over 8 real
    Trainer steps, / 8 plain steps."""
    base = {f"every={k}": {"every": int(k)} for k in args.every.split(",") if k}
    base |= {f"subsample={f}": {"subsample": float(f)} for f in args.fractions.split(",") if f}
    settings = {}
    for path in args.paths.split(","):
        tag = "" if path == "auto" else f",{path}"
        settings |= {k + tag: {**v, "path": path} for k, v in base.items()}
    with tempfile.TemporaryDirectory() as tmp:
        (plain,) = trainers(Path(tmp), 1, [])
        runs = {k: trainers(Path(tmp), 1, [{**GROKALIGN, **v}])[0] for k, v in settings.items()}

    def steps(tr):
        return lambda: [tr.train_step(x, y) for _ in range(8)]

    cases = {"plain": steps(plain), **{k: steps(tr) for k, tr in runs.items()}}
    t = interleaved(cases, args.reps, CPU)  # as many as the single steps: 10 moved it +-0.1
    return {k: t[k] / t["plain"] for k in settings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="1: the shared CI machine's norm")
    ap.add_argument("--subsample", type=int, default=32)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--every", default="1,2,4,8", help="lazy GrokAlign periods k to time")
    ap.add_argument("--fractions", default="0.25,0.125,0.0625",
                    help="grokalign:subsample fractions f to time")  # fmt: skip
    ap.add_argument("--paths", default="auto,autograd",
                    help="GrokAlign's paths for every=k / subsample=f: auto (the ReLU chain), "
                    "autograd")  # fmt: skip
    ap.add_argument("--smoke", action="store_true", help="tiny settings: a check, not a figure")
    args = ap.parse_args()
    if args.smoke:
        args.reps, args.draws, args.every, args.fractions = 1, 2, "2", "0.25"
    torch.set_num_threads(args.threads)
    names = ["grokalign", "params-only", "subsample", "func-jvp", "fused-jvp", "fused-sub"]
    with tempfile.TemporaryDirectory() as tmp:
        (plain,) = trainers(Path(tmp), 1, [])
        tr = dict(zip(names, trainers(Path(tmp), len(names), [GROKALIGN]), strict=True))
        (tr["autograd"],) = trainers(Path(tmp), 1, [{**GROKALIGN, "path": "autograd"}])
    torch.manual_seed(1)
    x, y = torch.rand(128, 784), torch.randint(0, 10, (128,))
    # params-only changes nothing but the backward's reach: same weights after a step
    torch.manual_seed(2)
    tr["grokalign"].train_step(x, y)
    torch.manual_seed(2)
    params_only_step(tr["params-only"], x, y)
    identical = same_weights(tr["grokalign"], tr["params-only"])
    u, model = rademacher(x), tr["fused-jvp"].model
    ref = torch.func.jvp(model, (x,), (u,))[1]
    fused_ok = torch.allclose(fused_jvp(model, x, u)[1], ref, rtol=1e-4, atol=1e-3)
    idx = torch.randperm(x.shape[0])[: args.subsample]
    fused_ok &= torch.allclose(fused_jvp(model, x, u[idx], idx)[1], ref[idx], rtol=1e-4, atol=1e-3)
    cases = {
        "plain": lambda: plain.train_step(x, y),
        "grokalign": lambda: tr["grokalign"].train_step(x, y),
        "autograd": lambda: tr["autograd"].train_step(x, y),
        "params-only": lambda: params_only_step(tr["params-only"], x, y),
        "subsample": lambda: params_only_step(tr["subsample"], x, y, args.subsample),
        "func-jvp": lambda: forward_mode_step(tr["func-jvp"], x, y, fused=False),
        "fused-jvp": lambda: forward_mode_step(tr["fused-jvp"], x, y, fused=True),
        "fused-sub": lambda: forward_mode_step(tr["fused-sub"], x, y, True, args.subsample),
    }
    t = interleaved(cases, args.reps, CPU)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, reps {args.reps}, "
          f"MLP 784-196-196-196-10, batch 128, AdamW, CPU")  # fmt: skip
    for k, v in t.items():
        print(f"  {k:<12} {v * 1e3:7.2f} ms  {v / t['plain']:5.2f}x plain")
    print(f"params-only gives the same weights as grokalign: {identical}")
    print(f"fused-jvp's J u (all rows, subsample) equals torch.func.jvp's: {fused_ok}")
    ratio = t["grokalign"] / t["plain"]
    print(f"GrokAlign step / plain step: {ratio:.2f}x (must be <= 2.2)")
    cheap = cheap_costs(args, x, y)
    print("amortised GrokAlign step with every=k or subsample=f (8 real Trainer steps) / plain:")
    for k, r in cheap.items():
        print(f"  {k:<16} {r:5.2f}x plain")
    print(f"estimators over {args.draws} draws (mean est/exact, rel. std of the fro penalty, "
          "E[sqrt est]/norm(J)_F):")  # fmt: skip
    model = tr["grokalign"].model
    for name, (unbiased, spread, sqrt_bias) in estimator_stats(
        model, x, args.draws, args.subsample
    ).items():
        print(f"  {name:<32} {unbiased:6.3f}  {spread:6.3f}  {sqrt_bias:6.3f}")
    sys.exit(0 if ratio <= 2.2 or args.smoke else 1)


if __name__ == "__main__":
    main()
