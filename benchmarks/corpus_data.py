"""The data of the verdict corpus (benchmarks/verdict_corpus.py): seeded NumPy generators,
each returning (arrays for a data file, number of classes or 1 for a scalar output, input
range or None)."""

from __future__ import annotations

import math

import numpy as np


def digits(seed, n_train=500, noise=0.0, random_labels=False, image=False):
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


def gmm(seed, d=16, c=4, n_train=200, n_test=400, sep=1.2, random_labels=False, scalar=False):
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


def modadd(seed, p=23, frac=0.5, tokens=False):
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


def parity(seed, n=1000, bits=30, k=3, pm1=False, frac=0.5):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, (n, bits)).astype("float32")
    y = (x[:, :k].sum(1) % 2).astype("int64")
    if pm1:
        x = 2 * x - 1
    m = int(n * frac)
    rng_ = [float(x.min()), float(x.max())]
    return dict(x_train=x[:m], y_train=y[:m], x_test=x[m:], y_test=y[m:]), 2, rng_


def xor(seed, n=200, dim=40, eps=0.3):
    """The paper's XOR cluster, small: x1, x2 in {+-1}, the rest in {+-eps}; y = x1 x2."""
    rng = np.random.default_rng(seed)

    def draw(m):
        x = rng.choice([-eps, eps], size=(m, dim)).astype("float32")
        x[:, :2] = rng.choice([-1.0, 1.0], size=(m, 2))
        return x, (x[:, 0] * x[:, 1]).astype("int64")

    (xtr, ytr), (xte, yte) = draw(n), draw(n)
    return dict(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte), 1, [-1.0, 1.0]


DATA = {"digits": digits, "gmm": gmm, "modadd": modadd, "parity": parity, "xor": xor}
