"""Held-out checks of training (qa18): regularisers against float64 references on new model
shapes, what a step may change besides the weights, and what a run trains."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alignctl import Trainer
from alignctl.errors import InputError
from alignctl.geometry.inputs import ModelFront
from alignctl.runs.config import config_from_dict
from alignctl.train.regularisers import build_regulariser
from alignctl.train.step import step_loss

NETS = """
import torch
from torch import nn


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen, self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)
        self.b2 = self.b  # shared
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.b2(torch.relu(self.a(self.frozen(x))))


def tied():
    return Tied()


def all_frozen():
    return Tied().requires_grad_(False)


def bn():
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
"""


def _cfg(folder: Path, factory: str, batch_size: int, regs=(), n: int = 16) -> object:
    (folder / "nets.py").write_text(NETS)
    r = np.random.default_rng(0)
    np.savez(folder / "d.npz", x_train=r.normal(size=(n, 4)).astype("float32"),
             y_train=r.integers(0, 3, n), x_test=r.normal(size=(8, 4)).astype("float32"),
             y_test=r.integers(0, 3, 8))  # fmt: skip
    train = {"epochs": 2, "loss": "cross_entropy", "batch_size": batch_size,
             "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
             "regularisers": list(regs)}  # fmt: skip
    d = {"model": {"factory": f"nets.py:{factory}"}, "data": {"path": "d.npz"}, "train": train}
    return config_from_dict(d, folder)


# -- GrokAlign vs a float64 reference (SETUPS.md: mean sqrt(max(estimate, 1e-8)) / the mean) --
def _reference(model, x, lam, norm):
    """float64, from the batch function's full Jacobian: row i's v^T J is
    sum_j e_k^T d out_j / d x_i (the official code's VJP of the batch, so BatchNorm's coupling
    of the rows is included), summed over the C one-hot k."""
    n = x.shape[0]
    J = torch.autograd.functional.jacobian(lambda a: model(a).reshape(n, -1), x, create_graph=True)
    g = J.reshape(n, J.shape[1], n, -1).sum(0)  # (C, n, d)
    est = g.pow(2).sum((0, 2))
    return lam * (est.clamp_min(1e-8).sqrt() if norm == "fro" else est).mean()


class _Seq(nn.Module):  # sequences (n, 3, 4) -> C, no bias
    def __init__(self, c):
        super().__init__()
        self.l, self.o = nn.Linear(4, 5, bias=False), nn.Linear(15, c, bias=False)

    def forward(self, x):
        return self.o(torch.tanh(self.l(x)).flatten(1))


CASES = {
    "cnn C=1": (
        lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(48, 1)),
        (4, 2, 6, 6),
    ),  # fmt: skip
    "cnn C=50": (
        lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(48, 50)),
        (4, 2, 6, 6),
    ),  # fmt: skip
    "sequence, no bias": (lambda: _Seq(3), (5, 3, 4)),
    "batch of 1": (lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5)), (1, 6)),
    "batchnorm, train mode": (
        lambda: nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)),
        (6, 6),
    ),  # fmt: skip
}


@pytest.mark.parametrize("norm", ["fro", "fro2"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_grokalign_step_gradient_equals_a_float64_reference(case, norm):
    make, shape = CASES[case]
    torch.manual_seed(0)
    model, x = make().double().train(), torch.randn(*shape, dtype=torch.float64)
    c = model(x).reshape(len(x), -1).shape[1]
    y = torch.randint(0, max(c, 2), (len(x),))

    def loss_fn(out, yb):
        if out.reshape(len(yb), -1).shape[1] == 1:
            return F.binary_cross_entropy_with_logits(out.reshape(-1), yb.to(out.dtype))
        return F.cross_entropy(out, yb)

    ref_model = copy.deepcopy(model)
    reg = build_regulariser(f"grokalign:lambda=0.3,n_proj=exact,norm={norm}")
    got = step_loss(model, ModelFront(model, x[:1]), [reg], loss_fn, x, y)
    want = loss_fn(ref_model(x), y) + _reference(ref_model, x.clone(), 0.3, norm)
    g1 = torch.autograd.grad(got, list(model.parameters()), allow_unused=True)
    g2 = torch.autograd.grad(want, list(ref_model.parameters()), allow_unused=True)
    scale = max(b.abs().max().item() for b in g2 if b is not None)
    for a, b, p in zip(g1, g2, model.parameters(), strict=True):
        a, b = (torch.zeros_like(p) if t is None else t for t in (a, b))
        assert (a - b).abs().max().item() <= 1e-12 * scale


# -- what a step changes ------------------------------------------------------------------------
def test_the_penalty_subset_pass_leaves_batchnorm_statistics_alone():
    """subsample's own forward pass of the subset once moved BatchNorm's running statistics a
    second time per step (num_batches_tracked 2 after one step): the eval-mode model then
    depended on the penalty's subset."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    states = []
    for spec in ["grokalign:lambda=0.1", "grokalign:lambda=0.1,subsample=0.5"]:
        m = copy.deepcopy(model)
        step_loss(m, ModelFront(m, x[:2]), [build_regulariser(spec)], F.cross_entropy, x, y)
        states.append({k: v for k, v in m.state_dict().items() if "running" in k or "num" in k})
    assert int(states[1]["1.num_batches_tracked"]) == 1
    for k, v in states[0].items():
        assert torch.equal(v, states[1][k]), k


@pytest.mark.parametrize("reg", ["none", "grokfast", "orthograd", "grokalign:lambda=0.1"])
def test_a_factory_parameter_without_requires_grad_stays_frozen(tmp_path, reg):
    """The Trainer once set requires_grad on every parameter: a factory's frozen layer was
    trained (with every regulariser)."""
    regs = [] if reg == "none" else [reg]
    (tmp_path / "run").mkdir()
    tr = Trainer(tmp_path / "run", _cfg(tmp_path, "tied", 5, regs), device="cpu")
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.fit(2, save_every=1)
    after = tr.model.state_dict()
    assert torch.equal(before["frozen.weight"], after["frozen.weight"])
    assert torch.equal(before["frozen.bias"], after["frozen.bias"])
    assert not torch.equal(before["a.weight"], after["a.weight"])
    assert torch.equal(after["b.weight"], after["b2.weight"])


def test_a_factory_with_nothing_to_train_is_one_error(tmp_path):
    with pytest.raises(InputError, match="requires_grad off for every parameter"):
        Trainer(tmp_path / "run", _cfg(tmp_path, "all_frozen", 5), device="cpu")


@pytest.mark.parametrize(
    ("batch_size", "regs"),
    [(5, []), (4, ["grokalign:subsample=0.2"]), (16, ["grokalign:subsample=0.05,every=2"])],
)
def test_a_batch_the_model_cannot_train_on_is_an_input_error_before_training(
    tmp_path, batch_size, regs
):
    """16 samples in batches of 5 end an epoch with one row, and BatchNorm refuses one row in
    training mode: that was an "internal error" mid-run, after checkpoints were written."""
    cfg = _cfg(tmp_path, "bn", batch_size, regs)
    with pytest.raises(InputError, match="cannot train on a batch of 1 row"):
        Trainer(tmp_path / "run", cfg, device="cpu")
    assert not (tmp_path / "run").exists()


def test_the_smallest_batch_check_leaves_no_trace(tmp_path):
    """The check runs the model in training mode: the RNG and BatchNorm statistics are as
    before it."""
    cfg = _cfg(tmp_path, "bn", 4, ["grokalign:subsample=0.5"])
    torch.manual_seed(123)
    tr = Trainer(tmp_path / "run", cfg, device="cpu")
    assert int(tr.model[1].num_batches_tracked) == 0
    assert torch.equal(tr.model[1].running_mean, torch.zeros(8))
    torch.manual_seed(int(cfg.train["seed"]))
    fresh = __import__("alignctl.runs.models", fromlist=["build_model"]).build_model(
        cfg.model, cfg.base_dir
    )
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, tr.model.state_dict()[k]), k


def test_a_resume_takes_the_thread_count_the_run_trained_with(tmp_path):
    """A run trained with --threads 2 and resumed without --threads took the automatic count
    (1 for a small model): its weights then differed in the last bits from the uninterrupted
    run's (measured: from the first resumed checkpoint on, BatchNorm + dropout, AdamW)."""
    from alignctl.train.trainer import set_threads

    before = torch.get_num_threads()
    try:
        cfg = _cfg(tmp_path, "tied", 5)
        (tmp_path / "run").mkdir()
        tr = Trainer(tmp_path / "run", cfg, device="cpu")
        assert set_threads(tr, 2) == 2
        tr.fit(1)
        resumed = Trainer(tmp_path / "run", cfg, device="cpu")
        resumed.restore()
        assert set_threads(resumed, None) == 2 == torch.get_num_threads()
        assert not resumed.notes
        assert set_threads(resumed, 1) == 1
        assert "trained with 2 threads" in resumed.notes[-1]
    finally:
        torch.set_num_threads(before)
