"""The verdict corpus: small training runs, each with its truth, to judge alignctl's verdicts
and recommendations on runs it was not tuned on (issue 13).

    nice -n 10 python benchmarks/verdict_corpus.py --out corpus/            # all runs
    python benchmarks/verdict_corpus.py --out corpus/ --only digits-mlp-adamw
    python benchmarks/verdict_corpus.py --list

Every run is seeded and cached: a finished run (its ``truth.json`` exists) is skipped, so an
interrupted build loses one run at most. One CPU thread; the whole corpus takes minutes.

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
CHANGE = ["try-grokalign", "increase-lambda"]  # "change something" (weight decay in the reason)


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


# ---------------------------------------------------------------- data (numpy, seeded)


def _digits(seed, n_train=500, noise=0.0, random_labels=False, image=False):
    from sklearn.datasets import load_digits

    b = load_digits()
    x, y = (b.data / 16.0).astype("float32"), b.target.astype("int64")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x))
    te, tr = perm[:360], perm[360 : 360 + n_train]
    ytr = y[tr].copy()
    if noise:
        flip = rng.random(len(tr)) < noise
        ytr[flip] = (ytr[flip] + rng.integers(1, 10, flip.sum())) % 10  # always a wrong label
    if random_labels:
        ytr = rng.integers(0, 10, len(tr))
    shape = (-1, 1, 8, 8) if image else (-1, 64)
    return dict(x_train=x[tr].reshape(shape), y_train=ytr, x_test=x[te].reshape(shape),
                y_test=y[te]), 10, [0.0, 1.0]  # fmt: skip


def _gmm(seed, d=16, c=4, n_train=200, n_test=400, sep=1.2, random_labels=False, scalar=False):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(c, d)) * sep / math.sqrt(2)  # expected distance between means ~sep
    means *= math.sqrt(d) / max(1.0, math.sqrt(d))

    def draw(n):
        y = rng.integers(0, c, n)
        return (means[y] + rng.normal(size=(n, d))).astype("float32"), y

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    if random_labels:
        ytr = rng.integers(0, c, n_train)
    if scalar:
        ytr, yte = 2 * (ytr % 2) - 1, 2 * (yte % 2) - 1
    lo, hi = float(min(xtr.min(), xte.min())), float(max(xtr.max(), xte.max()))
    return dict(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte), (1 if scalar else c), [lo, hi]


def _modadd(seed, p=23, frac=0.5, tokens=False):
    rng = np.random.default_rng(seed)
    a, b = np.repeat(np.arange(p), p), np.tile(np.arange(p), p)
    perm = rng.permutation(p * p)
    a, b = a[perm], b[perm]
    y = (a + b) % p
    if tokens:
        x = np.stack([a, b], 1).astype("int64")
    else:
        eye = np.eye(p, dtype="float32")
        x = np.concatenate([eye[a], eye[b]], 1)
    n = int(p * p * frac)
    return dict(x_train=x[:n], y_train=y[:n], x_test=x[n:], y_test=y[n:]), p, None


def _parity(seed, n=1000, bits=30, k=3, pm1=False, frac=0.5):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, (n, bits)).astype("float32")
    y = (x[:, :k].sum(1) % 2).astype("int64")
    if pm1:
        x = 2 * x - 1
    m = int(n * frac)
    rng_ = [float(x.min()), float(x.max())]
    return dict(x_train=x[:m], y_train=y[:m], x_test=x[m:], y_test=y[m:]), 2, rng_


def _xor(seed, n=200, dim=40, eps=0.3):
    """The paper's XOR cluster, small: x1, x2 in {+-1}, the rest in {+-eps}; y = x1 x2."""
    rng = np.random.default_rng(seed)

    def draw(m):
        x = rng.choice([-eps, eps], size=(m, dim)).astype("float32")
        x[:, :2] = rng.choice([-1.0, 1.0], size=(m, 2))
        return x, (x[:, 0] * x[:, 1]).astype("int64")

    (xtr, ytr), (xte, yte) = draw(n), draw(n)
    return dict(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte), 1, [-1.0, 1.0]


DATA = {"digits": _digits, "gmm": _gmm, "modadd": _modadd, "parity": _parity, "xor": _xor}


# ---------------------------------------------------------------- the runs


def plain(name, family, data, model, *, steps, accept, loss="ce", opt="adamw", lr=1e-3, wd=0.0,
          batch=None, momentum=0.0, fmt="safetensors", seed=0, note=""):  # fmt: skip
    d_name, d_kw = data
    return dict(name=name, family=family, loop="plain", data=d_name, data_kw=d_kw, model=model,
                steps=steps, accept=accept, loss=loss, opt=opt, lr=lr, wd=wd, batch=batch,
                momentum=momentum, fmt=fmt, seed=seed, note=note)  # fmt: skip


def trained(name, family, config, *, epochs, accept, data=None, note=""):
    """A run made by ``alignctl train --config``; ``data`` (name, kwargs) writes a data file
    that the config's ``data: {path: ...}`` reads."""
    return dict(name=name, family=family, loop="alignctl", config=config, epochs=epochs,
                accept=accept, data=data[0] if data else None,
                data_kw=data[1] if data else {}, seed=0, note=note)  # fmt: skip


def _opt(name="adamw", lr=1e-3, wd=0.0, momentum=0.0):
    return {"name": name, "lr": lr, "weight_decay": wd, "momentum": momentum}


MLP64 = {"kind": "mlp", "d": 64, "hidden": [128, 128], "c": 10}
RUNS = [
    # digits, a plain MLP: fits and generalises; nothing to change
    plain(
        "digits-mlp-adamw",
        "digits-mlp",
        ("digits", {}),
        MLP64,
        steps=1500,
        accept=["stop"],
        note="bias, AdamW, cross-entropy",
    ),
    plain(
        "digits-mlp-nobias-sgd-mse",
        "digits-mlp",
        ("digits", {}),
        {**MLP64, "bias": False},
        steps=3000,
        loss="mse",
        opt="sgd",
        lr=0.05,
        momentum=0.9,
        accept=["stop", "keep-training"],
        note="no bias, SGD, squared error",
        fmt="pt",
    ),
    plain(
        "digits-mlp-wd-minibatch",
        "digits-mlp",
        ("digits", {}),
        MLP64,
        steps=2000,
        batch=64,
        wd=0.05,
        accept=["stop"],
        note="AdamW weight decay 0.05, batch 64",
    ),
    # digits, CNN with BatchNorm
    plain(
        "digits-cnn-bn-adamw",
        "digits-cnn-bn",
        ("digits", {"image": True}),
        {"kind": "cnn_bn"},
        steps=800,
        lr=3e-3,
        accept=["stop"],
    ),
    plain(
        "digits-cnn-bn-sgd-wd",
        "digits-cnn-bn",
        ("digits", {"image": True, "seed": 1}),
        {"kind": "cnn_bn"},
        steps=1200,
        opt="sgd",
        lr=0.05,
        momentum=0.9,
        wd=5e-4,
        batch=100,
        accept=["stop"],
        fmt="pt",
    ),
    # digits, LayerNorm + dropout + GELU
    plain(
        "digits-ln-dropout",
        "digits-ln-gelu",
        ("digits", {}),
        {**MLP64, "act": "gelu", "layernorm": True, "dropout": 0.2},
        steps=1500,
        accept=["stop", "keep-training"],
    ),
    plain(
        "digits-ln-gelu-wd",
        "digits-ln-gelu",
        ("digits", {"seed": 2}),
        {**MLP64, "act": "gelu", "layernorm": True},
        steps=1500,
        wd=0.1,
        accept=["stop"],
    ),
    # label noise: generalises first, then memorises the noise (test accuracy falls)
    plain(
        "digits-noise40",
        "label-noise",
        ("digits", {"noise": 0.4}),
        {**MLP64, "hidden": [256, 256]},
        steps=3000,
        lr=3e-3,
        accept=["stop"],
        note="40% wrong labels; overfits after generalising",
    ),
    plain(
        "digits-noise25-pt",
        "label-noise",
        ("digits", {"noise": 0.25, "seed": 3}),
        {**MLP64, "hidden": [256, 256]},
        steps=3000,
        lr=3e-3,
        accept=["stop"],
        fmt="pt",
    ),
    # random labels: memorisation that no regulariser can turn into generalisation
    plain(
        "digits-random-labels",
        "random-labels",
        ("digits", {"random_labels": True}),
        {**MLP64, "hidden": [256, 256]},
        steps=2500,
        lr=3e-3,
        accept=["investigate"],
    ),
    plain(
        "gmm-random-labels-tanh",
        "random-labels",
        ("gmm", {"random_labels": True}),
        {"kind": "mlp", "d": 16, "hidden": [256, 256], "c": 4, "act": "tanh"},
        steps=5000,
        lr=3e-3,
        accept=["investigate"],
    ),
    # Gaussian mixture, tanh / GELU
    plain(
        "gmm-tanh",
        "gmm",
        ("gmm", {"sep": 3.0}),
        {"kind": "mlp", "d": 16, "hidden": [64, 64], "c": 4, "act": "tanh"},
        steps=1500,
        accept=["stop"],
    ),
    plain(
        "gmm-gelu-sgd-logit",
        "gmm",
        ("gmm", {"sep": 3.0, "seed": 1}),
        {"kind": "mlp", "d": 16, "hidden": [64], "c": 4, "act": "gelu"},
        steps=2000,
        opt="sgd",
        lr=0.1,
        wd=1e-3,
        accept=["stop", "keep-training"],
        fmt="pt",
    ),
    # modular addition with embeddings (token model), plain loop
    plain(
        "modadd-embed-wd",
        "modadd-embed",
        ("modadd", {"tokens": True, "frac": 0.7}),
        {"kind": "token", "p": 23},
        steps=3000,
        lr=1e-2,
        wd=1.0,
        accept=["stop", "keep-training"],
        note="grokking: late generalisation",
    ),
    plain(
        "modadd-embed-nowd",
        "modadd-embed",
        ("modadd", {"tokens": True, "seed": 1}),
        {"kind": "token", "p": 23},
        steps=3000,
        lr=3e-3,
        accept=CHANGE,
        note="memorises; test accuracy stays low",
    ),
    # scalar output: the small XOR cluster (logistic, no bias) and a binary mixture (mse)
    plain(
        "xor-scalar-logistic",
        "scalar",
        ("xor", {}),
        {"kind": "scalar_mlp", "d": 40, "hidden": [256], "bias": False},
        steps=3000,
        loss="logistic",
        opt="sgd",
        lr=0.1,
        wd=0.01,
        accept=["stop", "keep-training"],
    ),
    plain(
        "gmm-scalar-mse",
        "scalar",
        ("gmm", {"scalar": True, "sep": 3.0, "seed": 2}),
        {"kind": "scalar_mlp", "d": 16, "hidden": [64, 64]},
        steps=1500,
        loss="mse",
        accept=["stop"],
    ),
    # pathologies: divergence and underfitting
    plain(
        "digits-diverge",
        "pathology",
        ("digits", {}),
        {**MLP64, "init_scale": 2.0},
        steps=400,
        loss="mse",
        opt="sgd",
        lr=3.0,
        accept=["investigate"],
        note="learning rate too large",
    ),
    plain(
        "gmm-underfit",
        "pathology",
        ("gmm", {"sep": 0.8, "seed": 4}),
        {"kind": "mlp", "d": 16, "hidden": [2], "c": 4},
        steps=1500,
        lr=1e-3,
        accept=["investigate", "keep-training"],
        note="width-2 network cannot fit",
    ),
]

PARITY_MODEL = {"arch": "mlp", "in_features": 30, "hidden": [128, 128], "out_features": 2}
PARITY_TRAIN = {"loss": "cross_entropy", "optimizer": _opt(lr=0.01, wd=0.1)}
MODADD_MODEL = {"arch": "mlp", "in_features": 46, "hidden": [128], "out_features": 23}
MODADD_DATA = {"task": "modular-addition", "p": 23, "train_fraction": 0.7}
RUNS += [
    # sparse parity with alignctl train (0/1 and +-1 inputs), with and without GrokAlign
    trained(
        "parity01-baseline",
        "sparse-parity",
        {"model": PARITY_MODEL, "data": {"path": "DATA"}, "train": PARITY_TRAIN},
        data=("parity", {}),
        epochs=3000,
        accept=["stop", "keep-training"],
        note="grokking",
    ),
    trained(
        "paritypm1-baseline",
        "sparse-parity",
        {"model": PARITY_MODEL, "data": {"path": "DATA"}, "train": PARITY_TRAIN},
        data=("parity", {"pm1": True}),
        epochs=1500,
        accept=CHANGE,
        note="+-1 inputs: memorises",
    ),
    trained(
        "parity01-grokalign",
        "grokalign",
        {
            "model": PARITY_MODEL,
            "data": {"path": "DATA"},
            "train": {**PARITY_TRAIN, "regularisers": [{"name": "grokalign", "lambda": 0.1}]},
        },
        data=("parity", {"seed": 1}),
        epochs=300,
        accept=["stop", "keep-training"],
    ),
    trained(
        "digits-grokalign",
        "grokalign",
        {
            "model": {"arch": "mlp", "in_features": 64, "hidden": [128, 128], "out_features": 10},
            "data": {"task": "digits", "n_train": 500},
            "train": {
                "loss": "cross_entropy",
                "optimizer": _opt(lr=1e-3),
                "regularisers": [{"name": "grokalign", "lambda": 0.01}],
            },
        },
        epochs=600,
        accept=["stop", "keep-training"],
    ),
    # modular addition, one-hot MLP, alignctl train
    trained(
        "modadd-onehot-wd",
        "modadd-onehot",
        {
            "model": MODADD_MODEL,
            "data": MODADD_DATA,
            "train": {"loss": "cross_entropy", "optimizer": _opt(lr=1e-2, wd=1.0)},
        },
        epochs=3000,
        accept=["stop", "keep-training"],
        note="grokking",
    ),
    trained(
        "modadd-onehot-nowd",
        "modadd-onehot",
        {
            "model": MODADD_MODEL,
            "data": {"task": "modular-addition", "p": 23, "seed": 1},
            "train": {"loss": "cross_entropy", "optimizer": _opt(lr=3e-3)},
        },
        epochs=2000,
        accept=CHANGE,
        note="memorises",
    ),
    trained(
        "modadd-onehot-mse",
        "modadd-onehot",
        {
            "model": MODADD_MODEL,
            "data": {**MODADD_DATA, "seed": 2},
            "train": {"loss": "mse", "optimizer": _opt(lr=1e-2, wd=1.0)},
        },
        epochs=3000,
        accept=["stop", "keep-training"],
    ),
]


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
            "optimizer": _opt(spec["opt"], spec["lr"], spec["wd"], spec["momentum"]),
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


def chance_of(n_classes: int) -> float:
    return 0.5 if n_classes <= 2 else 1.0 / n_classes


def build(spec: dict, out: Path) -> dict:
    """Train one run into ``out/NAME`` unless its truth.json exists; returns the truth."""
    folder = out / spec["name"]
    done = folder / "truth.json"
    if done.exists():
        return json.loads(done.read_text())
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
    truth.update(n_classes=n_classes, seconds=round(time.perf_counter() - t0, 1), checkpoints=rows)
    done.write_text(json.dumps(truth, indent=1))
    return truth


def _n_classes(spec: dict) -> int:
    if spec["data"]:
        return make_data(spec)[1]
    return int(spec["config"]["model"]["out_features"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("corpus"))
    ap.add_argument("--only", nargs="*", help="run names (default: all)")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    runs = [r for r in RUNS if not args.only or r["name"] in args.only]
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
