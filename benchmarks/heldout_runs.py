"""Held-out runs for the verdict (benchmarks/verdict_heldout.py): families, architectures,
data and a training loop that the verdict corpus (benchmarks/corpus_runs.py) does not have.

The corpus has digits (MLP, CNN with BatchNorm, LayerNorm), a 4-class Gaussian mixture,
modular addition (one-hot and a token MLP), sparse parity, the XOR cluster, all trained by a
plain full/mini-batch loop or ``alignctl train`` with log-spaced checkpoints from step 0. Here:
a Lightning Trainer (ModelCheckpoint every k steps: linear spacing; half the runs also save
step 0 from a callback, half do not, as Lightning users would not) and one Hugging Face
Trainer run; LR schedules (cosine, one-cycle, linear decay), SGD with momentum, Adam without
weight decay, large batches; residual MLPs without normalisation, a CNN without BatchNorm on
raw [0, 255] images, a one-layer attention model, SiLU/GELU; 20-30 classes, class imbalance,
squared error on label-smoothed (soft) targets; modular multiplication and subtraction; a
random teacher network with too few samples.

``accept``: the actions a researcher would accept for the run as DESIGNED (fixed before any
analysis; the builder prints each trajectory so a run that did not behave as designed is
seen and its hyperparameters, not its ``accept``, changed):
- fits and generalises, test accuracy flat at the end: stop (keep-training too where the
  test accuracy is still visibly rising at the end);
- memorises with flat test accuracy: change something (try-grokalign / increase-lambda; the
  reason names weight decay);
- test accuracy peaks then falls (label noise memorised after generalising): stop;
- random labels: investigate (no regulariser can find signal that is not there);
- diverged: investigate; underfit (train accuracy flat below the fit): investigate, or
  keep-training while train accuracy still rises;
- the starved teacher (test barely above chance, 100 samples for a 100-dimensional input):
  change something, or investigate (more data is the real cure; both are defensible).
"""

from __future__ import annotations

import numpy as np

CHANGE = ["try-grokalign", "increase-lambda"]


def blobs(seed, c=30, d=32, n_train=600, n_test=600, sep=2.5, noise=0.0, random_labels=False,
          imbalance=0.0, scale255=False):  # fmt: skip
    """Gaussian blobs, C classes; ``imbalance``: share of class 0 beyond uniform;
    ``noise``: share of train labels replaced by another class; ``scale255``: inputs mapped
    affinely into [0, 255]."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(c, d)) * sep / np.sqrt(2)
    probs = np.full(c, (1 - imbalance) / c)
    probs[0] += imbalance

    def draw(n):
        y = rng.choice(c, n, p=probs)
        return (means[y] + rng.normal(size=(n, d))).astype("float32"), y.astype("int64")

    (xtr, ytr), (xte, yte) = draw(n_train), draw(n_test)
    if noise:
        flip = rng.random(n_train) < noise
        ytr[flip] = (ytr[flip] + rng.integers(1, c, flip.sum())) % c
    if random_labels:
        ytr = rng.integers(0, c, n_train)
    if scale255:
        lo, hi = min(xtr.min(), xte.min()), max(xtr.max(), xte.max())
        xtr, xte = ((x - lo) / (hi - lo) * 255 for x in (xtr, xte))
    lo, hi = float(min(xtr.min(), xte.min())), float(max(xtr.max(), xte.max()))
    return dict(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte), c, [lo, hi]


def bars(seed, n_train=400, n_test=400, size=12, noise=0.0, pixel_noise=40.0):
    """Synthetic 12x12 grey images in [0, 255]: a bright bar, horizontal / vertical /
    diagonal / anti-diagonal (4 classes), at a random offset, on Gaussian pixel noise."""
    rng = np.random.default_rng(seed)

    def draw(n):
        y = rng.integers(0, 4, n)
        img = rng.normal(60, pixel_noise, (n, size, size))
        off = rng.integers(2, size - 2, n)
        idx = np.arange(size)
        for i in range(n):
            o = off[i]
            if y[i] == 0:
                img[i, o, :] += 150
            elif y[i] == 1:
                img[i, :, o] += 150
            elif y[i] == 2:
                img[i, idx, (idx + o) % size] += 150
            else:
                img[i, idx, (o - idx) % size] += 150
        return np.clip(img, 0, 255).astype("float32")[:, None], y.astype("int64")

    (xtr, ytr), (xte, yte) = draw(n_train), draw(n_test)
    if noise:
        flip = rng.random(n_train) < noise
        ytr[flip] = (ytr[flip] + rng.integers(1, 4, flip.sum())) % 4
    return dict(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte), 4, [0.0, 255.0]


def modular(seed, op="mul", p=23, frac=0.5):
    """Tokens (a, b) -> a * b mod p (a, b in 1..p-1: the multiplicative group) or a - b mod p."""
    rng = np.random.default_rng(seed)
    lo = 1 if op == "mul" else 0
    a, b = np.meshgrid(np.arange(lo, p), np.arange(lo, p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    y = (a * b) % p if op == "mul" else (a - b) % p
    perm = rng.permutation(len(a))
    x, y = np.stack([a, b], 1)[perm].astype("int64"), y[perm].astype("int64")
    n = int(len(x) * frac)
    return dict(x_train=x[:n], y_train=y[:n], x_test=x[n:], y_test=y[n:]), p, None


def teacher(seed, d=100, c=5, n_train=100, n_test=1000):
    """Labels from a random two-layer tanh teacher (argmax of its C outputs)."""
    rng = np.random.default_rng(seed)
    w1, w2 = rng.normal(size=(d, 64)) / np.sqrt(d), rng.normal(size=(64, c))

    def draw(n):
        x = rng.normal(size=(n, d)).astype("float32")
        return x, np.tanh(x @ w1).dot(w2).argmax(1).astype("int64")

    (xtr, ytr), (xte, yte) = draw(n_train), draw(n_test)
    lo, hi = float(min(xtr.min(), xte.min())), float(max(xtr.max(), xte.max()))
    return dict(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte), c, [lo, hi]


DATA = {"blobs": blobs, "bars": bars, "modular": modular, "teacher": teacher}


def run(name, family, data, model, *, steps, every, accept, loss="ce", opt="adam", lr=1e-3,
        wd=0.0, momentum=0.0, batch=None, sched=None, step0=True, loop="lightning",
        seed=0):  # fmt: skip
    return dict(name=name, family=family, data=data[0], data_kw=data[1], model=model,
                steps=steps, every=every, accept=accept, loss=loss, opt=opt, lr=lr, wd=wd,
                momentum=momentum, batch=batch, sched=sched, step0=step0, loop=loop,
                seed=seed)  # fmt: skip


# fmt: off
RES30 = {"kind": "resmlp", "d": 32, "c": 30, "width": 128}
RUNS = [
    run("blobs30-resmlp-sgdm-cosine", "blobs-many", ("blobs", {}), RES30, steps=1400,
        every=100, opt="sgd", lr=0.05, momentum=0.9, batch=128, sched="cosine",
        accept=["stop"]),
    run("blobs30-random-labels", "random-labels-many", ("blobs", {"random_labels": True,
        "n_train": 300}), {**RES30, "width": 256}, steps=2800, every=200, lr=3e-3,
        accept=["investigate"], step0=False),
    run("blobs20-noise35-overfit", "noise-blobs", ("blobs", {"c": 20, "noise": 0.35,
        "n_train": 400, "sep": 1.6, "seed": 1}), {"kind": "mlp", "d": 32,
        "hidden": [256, 256], "c": 20}, steps=2800, every=200, lr=2e-3, accept=["stop"]),
    run("bars255-cnn-adam", "images-255", ("bars", {}), {"kind": "cnn", "c": 4}, steps=700,
        every=50, lr=3e-3, batch=100, accept=["stop"], step0=False),
    run("bars255-cnn-noise30-small", "images-255", ("bars", {"noise": 0.3, "n_train": 150,
        "seed": 1}), {"kind": "cnn", "c": 4, "channels": 16}, steps=2100, every=150, lr=3e-3,
        accept=["stop"]),
    run("imbalance5-mlp-sgdm", "imbalance", ("blobs", {"c": 5, "imbalance": 0.6, "sep": 1.5,
        "seed": 2}), {"kind": "mlp", "d": 32, "hidden": [64, 64], "c": 5}, steps=1400,
        every=100, opt="sgd", lr=0.05, momentum=0.9, batch=64, accept=["stop"], step0=False),
    run("softmse-resmlp-onecycle", "soft-mse", ("blobs", {"c": 10, "sep": 2.0, "seed": 3}),
        {**RES30, "c": 10}, steps=1400, every=100, loss="softmse", lr=3e-3, sched="onecycle",
        batch=200, accept=["stop"]),
    run("teacher-starved-adam", "teacher", ("teacher", {}), {"kind": "mlp", "d": 100,
        "hidden": [256, 256], "c": 5, "act": "gelu"}, steps=1400, every=100, lr=1e-3,
        accept=CHANGE + ["investigate"], step0=False),
    run("modmul-attn-wd", "modular-attn", ("modular", {"op": "mul", "frac": 0.6}),
        {"kind": "attn", "p": 23}, steps=4200, every=300, opt="adamw", lr=3e-3, wd=1.0,
        accept=["stop", "keep-training"]),
    run("modsub-attn-nowd", "modular-attn", ("modular", {"op": "sub", "frac": 0.4,
        "seed": 1}), {"kind": "attn", "p": 23}, steps=2800, every=200, lr=3e-3,
        accept=CHANGE, step0=False),
    run("res255-diverge", "pathology-255", ("blobs", {"c": 10, "scale255": True, "seed": 4}),
        {"kind": "resmlp", "d": 32, "c": 10, "width": 64}, steps=420, every=30, opt="sgd",
        lr=0.05, momentum=0.9, accept=["investigate"]),
    run("blobs30-bottleneck-underfit", "pathology-255", ("blobs", {"seed": 5, "sep": 1.2}),
        {**RES30, "bottleneck": 2}, steps=1400, every=100, lr=1e-3, batch=128,
        accept=["investigate", "keep-training"], step0=False),
    run("blobs12-hf-lineardecay", "hf-trainer", ("blobs", {"c": 12, "sep": 2.0, "seed": 6}),
        {"kind": "mlp", "d": 32, "hidden": [128], "c": 12, "act": "gelu"}, steps=700,
        every=50, lr=3e-3, batch=64, sched="linear", loop="hf", accept=["stop"], step0=False),
    run("teacher-rich-largebatch", "teacher", ("teacher", {"d": 20, "n_train": 3000,
        "seed": 7}), {"kind": "mlp", "d": 20, "hidden": [256], "c": 5}, steps=2100,
        every=150, lr=2e-3, batch=1000, accept=["stop", "keep-training"]),
]
# fmt: on
