"""CIFAR10 from the local binary version (paper Fig. 5, App. A; public code: 1024 train and
1024 test samples). Never downloads. Reads data_batch_1..5.bin and test_batch.bin from
``root`` or ``root/cifar-10-batches-bin``; each record is 1 label byte + 3072 pixel bytes
(3 channel planes of 32x32). x (n, 3, 32, 32) scaled to [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from alignctl.errors import InputError
from alignctl.runs.tasks import Dataset, register_task, sample_indices

TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST = ["test_batch.bin"]
RECORD = 1 + 3 * 32 * 32


def _folder(root: Path) -> Path:
    for folder in (root, root / "cifar-10-batches-bin"):
        if all((folder / f).is_file() for f in TRAIN + TEST):
            return folder
    raise InputError(
        f"CIFAR10 binary files not found in {root} or {root / 'cifar-10-batches-bin'}; "
        f"looked for: {', '.join(TRAIN + TEST)} (alignctl never downloads data)"
    )


def read_batches(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Records of the CIFAR10 binary format -> (images (n, 3, 32, 32) uint8, labels (n,))."""
    recs = []
    for p in paths:
        raw = np.fromfile(p, dtype=np.uint8)
        if raw.size == 0 or raw.size % RECORD:
            raise InputError(f"{p}: size {raw.size} is not a multiple of the {RECORD}-byte record")
        recs.append(raw.reshape(-1, RECORD))
    data = np.concatenate(recs)  # (n, 3073)
    labels = data[:, 0]
    if labels.max() > 9:
        raise InputError(f"CIFAR10 labels must be 0..9, found {int(labels.max())} in {paths[0]}")
    return data[:, 1:].reshape(-1, 3, 32, 32), labels


@register_task("cifar10")
def cifar10(root: str | Path, n_train: int = 1024, n_test: int = 1024, seed: int = 0) -> Dataset:
    """Random n_train / n_test subsets drawn from the seed; y in 0..9."""
    folder = _folder(Path(root))
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for names, n, what in ((TRAIN, n_train, "n_train"), (TEST, n_test, "n_test")):
        x, y = read_batches([folder / f for f in names])
        idx = sample_indices(len(x), n, gen, f"cifar10 {what}").numpy()
        out += [
            torch.from_numpy(x[idx].astype(np.float32) / 255.0),
            torch.from_numpy(y[idx].astype(np.int64)),
        ]
    return Dataset(*out, num_classes=10, input_range=(0.0, 1.0), name="cifar10")


# small params for the registry-driven tests; they write tiny binary batches under `root`
cifar10.test_params = {"root": "cifar", "n_train": 4, "n_test": 3}
