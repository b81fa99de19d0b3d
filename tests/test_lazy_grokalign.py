"""Lazy GrokAlign (``grokalign:every=k``, StyleGAN2-style lazy regularisation): the penalty on
one step in k with lambda scaled by k, its cycle part of the resumable training state."""

from __future__ import annotations

import copy

import pytest
import torch
from _configs import grokalign_config, weights
from torch import nn

from alignctl import Trainer, build_regulariser
from alignctl.errors import InputError
from alignctl.runs.config import config_from_dict


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4)).double()


def _penalty(reg, model, x):
    xg = x.detach().requires_grad_(True)
    return reg.penalty(model, xg, model(xg), None)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_penalty_is_due_one_step_in_k_with_lambda_scaled_by_k(k):
    model, x = _net(), torch.randn(7, 6, dtype=torch.float64)
    eager = build_regulariser("grokalign:lambda=0.3,n_proj=exact")
    lazy = build_regulariser(f"grokalign:lambda=0.3,n_proj=exact,every={k}")
    want = _penalty(eager, model, x)
    got = [_penalty(lazy, model, x) for _ in range(3 * k)]
    for i, p in enumerate(got):
        if i % k:
            assert p is None
        else:
            torch.testing.assert_close(p, k * want, rtol=1e-12, atol=0)


def test_gradient_summed_over_a_cycle_equals_the_eager_penalty_at_fixed_weights():
    """At fixed weights the k-step sum of lazy gradients is the k-step sum of eager ones."""
    model, x, k = _net(), torch.randn(5, 6, dtype=torch.float64), 4

    def summed(reg):
        total = [torch.zeros_like(p) for p in model.parameters()]
        for _ in range(k):
            p = _penalty(reg, model, x)
            if p is not None:
                grads = torch.autograd.grad(p, list(model.parameters()), allow_unused=True)
                total = [a if g is None else a + g for a, g in zip(total, grads, strict=True)]
        return total

    eager = summed(build_regulariser("grokalign:lambda=0.2,n_proj=exact,norm=fro2"))
    lazy = summed(build_regulariser(f"grokalign:lambda=0.2,n_proj=exact,norm=fro2,every={k}"))
    for a, b in zip(eager, lazy, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", ["0", "-2", "1.5", "true", "often"])
def test_every_must_be_a_positive_integer(bad):
    with pytest.raises(InputError, match="every"):
        build_regulariser(f"grokalign:every={bad}")


def test_grokunalign_inherits_the_lazy_schedule():
    model, x = _net(), torch.randn(4, 6, dtype=torch.float64)
    a = build_regulariser("grokalign:lambda=0.5,n_proj=exact,every=3")
    b = build_regulariser("grokunalign:lambda=0.5,n_proj=exact,every=3")
    for _ in range(4):
        pa, pb = _penalty(a, model, x), _penalty(b, model, x)
        assert (pa is None) == (pb is None)
        if pa is not None:
            torch.testing.assert_close(pa, -pb)


CFG = grokalign_config(every=3)


def test_resume_continues_the_cycle_bit_for_bit(tmp_path):
    """2 batches an epoch and every=3: the cycle runs across epoch boundaries."""
    ref = Trainer(tmp_path / "ref", config_from_dict(copy.deepcopy(CFG), tmp_path), "cpu")
    (tmp_path / "ref").mkdir()
    ref.fit(5, save_every=1)
    (tmp_path / "part").mkdir()
    part = Trainer(tmp_path / "part", config_from_dict(copy.deepcopy(CFG), tmp_path), "cpu")
    part.fit(2, save_every=1)
    resumed = Trainer(tmp_path / "part", config_from_dict(copy.deepcopy(CFG), tmp_path), "cpu")
    resumed.restore()
    assert resumed.regs[0].calls == part.regs[0].calls == 4  # mid-cycle: 4 % 3 == 1
    resumed.fit(5, save_every=1)
    a, b = weights(ref), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("spec", ["every=3", "every=2,subsample=0.5"])
def test_a_step_without_the_penalty_forwards_without_an_input_graph(spec):
    """The autograd path (``path=autograd``; a tanh net has no ReLU chain either): the batch's
    forward is differentiated at the input only on the steps the lazy penalty is due, and the
    losses are those of a step that always differentiates (the penalty is None in between)."""
    from alignctl.geometry.inputs import ModelFront
    from alignctl.train.step import step_loss

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 4)).double()
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 4, (8,))
    front = ModelFront(model, x)
    seen = []

    def forward(xb, input_grad):
        seen.append(input_grad)
        return front.forward_train(xb, input_grad)

    reg = build_regulariser(f"grokalign:lambda=0.3,n_proj=exact,path=autograd,{spec}")
    loss_fn = nn.CrossEntropyLoss()
    plain = loss_fn(model(x), y)
    for step in range(6):
        torch.manual_seed(step)  # the same subset either way
        loss = step_loss(model, front, [reg], loss_fn, x, y, forward=forward)
        due = step % reg.every == 0
        whole = due and reg.subsample == 1.0
        assert seen[-1] is whole, (step, seen)
        if not due:
            torch.testing.assert_close(loss, plain, rtol=0, atol=0)
        else:
            assert loss > plain
