"""Configs shared by test modules (``from _configs import ...``: pytest puts tests/ first on
sys.path)."""

from __future__ import annotations

import copy

# a small sparse-parity run with GrokAlign (lambda 0.1): 96 samples, 3 batches an epoch
SPARSE_PARITY_GROKALIGN = {
    "model": {"arch": "mlp", "in_features": 10, "hidden": [16], "out_features": 2},
    "data": {"task": "sparse-parity", "n": 96, "n_bits": 10, "k": 3, "seed": 0},
    "train": {
        "epochs": 5, "batch_size": 32, "loss": "cross_entropy", "seed": 0,
        "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1},
        "regularisers": [{"name": "grokalign", "lambda": 0.1}],
    },
}  # fmt: skip


def grokalign_config(**params) -> dict:
    """A fresh copy of :data:`SPARSE_PARITY_GROKALIGN`, its GrokAlign given ``params`` too."""
    d = copy.deepcopy(SPARSE_PARITY_GROKALIGN)
    d["train"]["regularisers"] = [{**d["train"]["regularisers"][0], **params}]
    return d


def weights(trainer) -> dict:
    """A copy of a Trainer's model weights (to compare runs bit for bit)."""
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}
