"""MNIST from local IDX files (Omnigrok setup: paper Fig. 4, 6, Table 1, App. A).

Never downloads. Looks in ``root`` and in ``root/MNIST/raw`` (torchvision's layout) for
train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
t10k-labels-idx1-ubyte, each optionally gzipped (.gz) or with a dot before "idx".
A random ``n_train`` subset (1024 in the paper) and ``n_test`` test samples are drawn from the
seed; pixels scaled to [0, 1].
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from alignctl.errors import InputError
from alignctl.runs.tasks import Dataset, register_task, sample_indices

FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _candidates(root: Path, name: str) -> list[Path]:
    dotted = name.replace("-idx", ".idx")
    return [
        folder / (stem + gz)
        for folder in (root, root / "MNIST" / "raw")
        for stem in (name, dotted)
        for gz in ("", ".gz")
    ]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file: 2 zero bytes, type code (0x08 = uint8), ndim, ndim big-endian int32 sizes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise InputError(f"{path}: cannot read: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise InputError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    if len(raw) - start != int(np.prod(dims)):
        raise InputError(f"{path}: expected {int(np.prod(dims))} data bytes for shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


def _find(root: Path, key: str) -> Path:
    cands = _candidates(root, FILES[key])
    for c in cands:
        if c.is_file():
            return c
    raise InputError(
        f"MNIST file {FILES[key]} not found in {root}; looked for: "
        + ", ".join(str(c) for c in cands)
        + " (alignctl never downloads data)"
    )


@register_task("mnist")
def mnist(
    root: str | Path, n_train: int = 1024, n_test: int = 10000, seed: int = 0, flatten: bool = True
) -> Dataset:
    """x (n, 784) or (n, 1, 28, 28) in [0, 1], y in 0..9."""
    root = Path(root)
    arrays = {k: read_idx(_find(root, k)) for k in FILES}
    for split in ("train", "test"):
        nx, ny = len(arrays[f"x_{split}"]), len(arrays[f"y_{split}"])
        if nx != ny:
            raise InputError(f"MNIST in {root}: {nx} {split} images but {ny} labels")
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        # the full test set keeps its order; subsets are random
        idx = sample_indices(len(x), n, gen, f"mnist n_{split}")
        if n == len(x):
            idx = torch.arange(n)
        xs = torch.from_numpy(x[idx.numpy()].astype(np.float32) / 255.0)  # (n, H, W)
        xs = xs.reshape(len(xs), -1) if flatten else xs.unsqueeze(1)  # (n, H*W) | (n, 1, H, W)
        out += [xs, torch.from_numpy(y[idx.numpy()].astype(np.int64))]
    return Dataset(*out, num_classes=10, input_range=(0.0, 1.0), name="mnist")


# small params for the registry-driven tests; they write tiny IDX files under `root`
mnist.test_params = {"root": "mnist", "n_train": 4, "n_test": 3}
