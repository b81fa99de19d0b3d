"""Training presets: the paper's setups (App. A; SETUPS.md) as full config dicts.

``alignctl train --task NAME`` starts from ``PRESETS.get(NAME)()``. The regularisers are left
empty (the baseline); :func:`preset_reg_defaults` gives the parameters the paper used for each
method in that setup, applied when the user adds the method without its own values. Weight
decay is never changed when a method is added (paper, section 5).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from alignctl.registry import Registry

PRESETS: Registry[Callable[[], dict]] = Registry("preset")

# Grokfast: EMA alpha 0.8, lambda 0.1 in every setup of the paper.
_GROKFAST = {"alpha": 0.8, "lamb": 0.1}
# {preset: {regulariser: parameters}}, the paper's values for each method in each setup
default_regularisers: dict[str, dict[str, dict]] = {}


def _preset(name: str, grokalign_lambda: float):
    """Register a preset and the GrokAlign lambda the paper tuned for it."""

    def deco(fn):
        default_regularisers[name] = {
            "grokalign": {"lambda": grokalign_lambda},
            # Appendix B's Grok(Un)Align: the same magnitude, negated by the regulariser
            "grokunalign": {"lambda": grokalign_lambda},
            "grokfast": dict(_GROKFAST),
        }
        return PRESETS.register(name)(fn)

    return deco


def preset_reg_defaults(name: str) -> dict[str, dict]:
    """{regulariser name: its default parameters} for preset ``name`` (InputError if unknown)."""
    PRESETS.get(name)
    return copy.deepcopy(default_regularisers[name])


def _train(epochs, loss, opt, lr, wd, batch_size=None, **opt_extra) -> dict:
    return {
        "epochs": epochs, "batch_size": batch_size, "loss": loss,
        "optimizer": {"name": opt, "lr": lr, "weight_decay": wd, **opt_extra},
        "regularisers": [], "seed": 0,
    }  # fmt: skip


def _grokked(test_acc=None, noise_acc=None, train_acc=None) -> dict:
    return {"train_acc": train_acc, "test_acc": test_acc, "noise_acc": noise_acc}


@_preset("xor-cluster", grokalign_lambda=1.0)
def xor_cluster() -> dict:
    """Xu et al.'s XOR cluster: two-layer scalar-output MLP without bias (hidden 2048, public
    code), squared error (f - y)^2 on +-1 labels (the public code's ``F.mse_loss``; the paper
    names no loss), full-batch GD lr 0.1, wd 0.1."""
    return {
        "model": {"arch": "mlp", "in_features": 40000, "hidden": [2048], "out_features": 1,
                  "bias": False},
        "data": {"task": "xor-cluster", "n_train": 400, "n_test": 400, "dim": 40000,
                 "eps": 0.05, "seed": 0},
        "train": _train(1000, "mse", "sgd", 0.1, 0.1, momentum=0.0),
        "grokked": _grokked(test_acc=0.95, noise_acc=0.95),
    }  # fmt: skip


@_preset("sparse-parity", grokalign_lambda=0.1)
def sparse_parity() -> dict:
    """(40, 3) sparse parity, 0/1 bits: MLP 40-200-200-2, AdamW lr 0.01 wd 0.1, full batch."""
    return {
        "model": {"arch": "mlp", "in_features": 40, "hidden": [200, 200], "out_features": 2},
        "data": {"task": "sparse-parity", "n": 2000, "n_bits": 40, "k": 3,
                 "train_fraction": 0.5, "seed": 0},
        "train": _train(10000, "cross_entropy", "adamw", 0.01, 0.1),
        "grokked": _grokked(test_acc=0.90),
    }  # fmt: skip


def _omnigrok(in_features: int, data: dict) -> dict:
    """Omnigrok's MNIST MLP: 3 hidden layers of 196, no bias, weights x8 at init; AdamW 1e-3,
    batch 128, wd 0.01, cross-entropy."""
    return {
        "model": {"arch": "mlp", "in_features": in_features, "hidden": [196, 196, 196],
                  "out_features": 10, "bias": False, "init_scale": 8.0},
        "data": data,
        "train": _train(10000, "cross_entropy", "adamw", 1e-3, 0.01, batch_size=128),
        # the authors' later code: train > 99% and test > 80% (SETUPS.md); without the train
        # criterion digits "groks" at epoch 3 with 86% train accuracy
        "grokked": _grokked(test_acc=0.80, train_acc=0.99),
    }  # fmt: skip


@_preset("mnist", grokalign_lambda=0.01)
def mnist() -> dict:
    """MNIST, 1024 training samples; IDX files under ./data (or ./data/MNIST/raw)."""
    return _omnigrok(784, {"task": "mnist", "root": "data", "n_train": 1024, "seed": 0})


@_preset("digits", grokalign_lambda=0.01)
def digits() -> dict:
    """The MNIST setup on scikit-learn's offline 8x8 digits (64 inputs)."""
    return _omnigrok(64, {"task": "digits", "seed": 0})


@_preset("digits-grok", grokalign_lambda=0.01)
def digits_grok() -> dict:
    """The digits stand-in changed just enough to memorise first: 256 training samples and
    weights x16 at init (the mnist preset's protocol otherwise). With the digits preset's
    1437 samples and x8 (also x16; or 256 samples and x8) the test accuracy passes 80% in the
    epoch the training data is fitted: no delayed generalisation to measure."""
    cfg = _omnigrok(64, {"task": "digits", "n_train": 256, "seed": 0})
    cfg["model"]["init_scale"] = 16.0
    return cfg


@_preset("digits-grok-mse", grokalign_lambda=0.01)
def digits_grok_mse() -> dict:
    """Table 1's squared-error MNIST row on digits: loss ||e_y - f(x)||^2 (``mse``: one-hot
    targets, summed over the 10 classes, batch mean; the paper's App. F), 256 training samples
    and weights x4 at init (Omnigrok's x8 otherwise: 3x196 bias-free MLP, AdamW 1e-3, batch
    128, wd 0.01). Why x4: with x8 the baseline memorises with test accuracy at chance
    (256 samples: 0.14 after 4000 epochs; 512: 0.17; 1024: 0.20 after 2100) and with all 1437
    (the digits preset) it groks only at epoch ~2350, ~155 s a run on a CPU core: too slow for
    a 10-seed race here (x8 figures: seed 0). With x4 it fits the data by epoch 95-173 (test
    accuracy 0.44-0.62) and passes 80% test accuracy at epoch 4004-4838 in 3 of 10 seeds, not
    within 5000 in the other 7 (benchmarks/digits_mse_protocol.py; README)."""
    cfg = _omnigrok(64, {"task": "digits", "n_train": 256, "seed": 0})
    cfg["model"]["init_scale"] = 4.0
    cfg["train"]["loss"] = "mse"
    return cfg


@_preset("modular-addition", grokalign_lambda=0.01)
def modular_addition() -> dict:
    """a + b mod 61, one-hot inputs, half the pairs for training: quadratic MLP 122-256-61
    without biases (Mallinar et al.), AdamW 1e-3, batch 32, wd 1.0."""
    return {
        "model": {"arch": "quadratic-mlp", "in_features": 122, "hidden": [256],
                  "out_features": 61, "bias": False},
        "data": {"task": "modular-addition", "p": 61, "train_fraction": 0.5,
                 "encoding": "onehot", "seed": 0},
        "train": _train(1000, "cross_entropy", "adamw", 1e-3, 1.0, batch_size=32),
        "grokked": _grokked(test_acc=0.99, train_acc=0.99),  # the authors' later code
    }  # fmt: skip


@_preset("cifar10-cnn", grokalign_lambda=0.001)
def cifar10_cnn() -> dict:
    """CIFAR10 robustness (Fig. 5): 5-conv CNN, 1024 train / 1024 test, AdamW 1e-3, batch 200,
    wd 1e-3. No grokked criterion: the paper measures PGD robustness instead."""
    return {
        "model": {"arch": "cnn", "in_channels": 3, "image_size": 32, "channels": 32,
                  "n_conv": 5, "fc": 256, "out_features": 10},
        "data": {"task": "cifar10", "root": "data", "n_train": 1024, "n_test": 1024, "seed": 0},
        "train": _train(100, "cross_entropy", "adamw", 1e-3, 1e-3, batch_size=200),
        "grokked": _grokked(),
    }  # fmt: skip


@_preset("modadd-transformer", grokalign_lambda=0.001)
def modadd_transformer() -> dict:
    """Nanda et al.'s one-layer transformer on a + b mod 113, 30% train (App. E, Fig. 8):
    AdamW 1e-3, wd 1.0, betas (0.9, 0.98), full batch."""
    return {
        "model": {"arch": "transformer", "p": 113, "d_model": 128, "n_heads": 4, "d_mlp": 512,
                  "n_ctx": 3},
        "data": {"task": "modular-addition", "p": 113, "train_fraction": 0.3,
                 "encoding": "tokens", "seed": 0},
        "train": _train(10000, "cross_entropy", "adamw", 1e-3, 1.0, betas=[0.9, 0.98]),
        "grokked": _grokked(test_acc=0.99),
    }  # fmt: skip
