"""The first weight's gradient of a ReLU-chain step as one product of stacked factors
(alignctl.train.first_layer): equal to autograd's two products and their sum in float64, on
generated MLPs and every penalty setting; accumulated as autograd accumulates; refused where
it cannot be right (a shared first weight); trainer runs unchanged up to rounding."""

from __future__ import annotations

import itertools

import pytest
import torch
from test_relu_chain import SHAPES, SPECS, _model, _mse
from torch import nn

from alignctl import Trainer, build_regulariser
from alignctl.geometry.inputs import ModelFront
from alignctl.runs.config import config_from_dict
from alignctl.train import first_layer
from alignctl.train.relu_chain import ReluChain
from alignctl.train.step import step_loss


def _grads(model, x, y, spec, fused: bool, steps=2, backward_twice=False):
    """W.grad of every parameter after ``steps`` penalised steps (loss.backward, as the
    trainer does), through a chain with or without the fused first-layer gradient."""
    chain = ReluChain.of(model, ModelFront(model, x))
    assert chain is not None and (chain.fuse() if fused else True)
    reg = build_regulariser(spec)
    torch.manual_seed(1)
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        loss = step_loss(model, ModelFront(model, x), [reg], _mse, x, y, chain=chain)
        loss.backward(retain_graph=backward_twice)
        if backward_twice:
            loss.backward()
    assert reg.chain_ok is True
    # taken exactly when the penalty is on a subset (the last step's penalty is due)
    assert chain._fused_now is (fused and "subsample" in spec and "every" not in spec)
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(("shape", "spec"), list(itertools.product(SHAPES, SPECS)))
def test_fused_equals_autograd_in_float64(shape, spec):
    model = _model(*shape)
    torch.manual_seed(2)
    x = torch.randn(12, *shape[0], dtype=torch.float64)
    y = torch.randn(12, shape[2], dtype=torch.float64)
    want = _grads(model, x, y, spec, fused=False)
    got = _grads(model, x, y, spec, fused=True)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_gradients_accumulate_as_autograd_accumulates():
    model = _model(*SHAPES[1])
    torch.manual_seed(2)
    x, y = torch.randn(10, 6, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    once = _grads(model, x, y, "grokalign:subsample=0.5", fused=True, steps=1)
    twice = _grads(model, x, y, "grokalign:subsample=0.5", fused=True, steps=1,
                   backward_twice=True)  # fmt: skip
    for a, b in zip(twice, once, strict=True):
        torch.testing.assert_close(a, 2 * b, rtol=1e-12, atol=1e-15)


def test_a_shared_first_weight_is_not_fused():
    first, other = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    other.weight = first.weight  # tied: its gradient has a third term
    model = nn.Sequential(first, nn.ReLU(), other, nn.ReLU(), nn.Linear(4, 2))
    chain = ReluChain.of(model, ModelFront(model, torch.randn(2, 4)))
    assert chain is not None and chain.fuse() is False and chain.fused is None


def test_inputs_that_need_a_gradient_are_not_fused():
    model = _model(*SHAPES[0])
    chain = ReluChain.of(model, ModelFront(model, torch.randn(2, 6, dtype=torch.float64)))
    assert chain.fuse()
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    chain.forward(x, fuse=True).sum().backward()
    assert x.grad is not None and chain._fused_now is False


def test_the_trainer_fuses_and_trains_as_without(tmp_path):
    """Four XOR-like steps (a small bias-free 2-layer ReLU MLP, full batch, GrokAlign on a
    subsample) with and without the fused gradient: the same weights up to float64 rounding."""
    d = {
        "model": {"arch": "mlp", "in_features": 20, "hidden": [16], "out_features": 1,
                  "bias": False},
        "data": {"task": "xor-cluster", "n_train": 40, "n_test": 20, "dim": 20, "seed": 0},
        "train": {"epochs": 4, "loss": "mse",
                  "optimizer": {"name": "sgd", "lr": 0.05, "weight_decay": 0.1},
                  "regularisers": [{"name": "grokalign", "lambda": 1.0, "subsample": 0.25}]},
    }  # fmt: skip
    runs = []
    for fused in (True, False):
        tr = Trainer(tmp_path / str(fused), config_from_dict(d, tmp_path), "cpu")
        tr.model.double()
        tr.x = tr.x.double()
        assert tr.chain is not None and (tr.chain.fused is not None) == first_layer.available()
        if not fused:
            tr.chain.fused = None
        torch.manual_seed(0)
        for _ in range(4):
            tr.train_step(tr.x, tr.y.double())
        runs.append([p.detach().clone() for p in tr.model.parameters()])
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
