"""GrokAlign through a ReLU chain (alignctl.train.relu_chain): the same penalty and gradient as
autograd's create-graph VJP and double backward, in float64, on generated ReLU MLPs and every
penalty setting; only provable ReLU MLPs take it; a disagreement falls back to autograd."""

from __future__ import annotations

import itertools
import logging

import pytest
import torch
from torch import nn

from alignctl import Trainer, build_regulariser
from alignctl.geometry.inputs import ModelFront
from alignctl.runs.config import config_from_dict
from alignctl.runs.models.mlp import make_mlp
from alignctl.train.regularisers import parse_reg_spec
from alignctl.train.relu_chain import ReluChain, agrees
from alignctl.train.step import step_loss

SHAPES = [  # (input shape, hidden widths, classes, bias, activation)
    ((6,), [7], 1, False, "relu"),
    ((6,), [5, 6], 3, True, "relu"),
    ((2, 3), [4, 4, 4], 10, False, "relu"),  # Flatten in front
    ((5,), [8], 2, True, "identity"),
]
SPECS = [
    "grokalign",
    "grokalign:subsample=0.25",
    "grokalign:n_proj=exact,norm=fro2",
    "grokalign:n_proj=2,subsample=0.5",
    "grokalign:every=2",
    "grokunalign:lambda=0.3,subsample=0.5",
]


def _mse(out, y):
    return (out.reshape(len(y), -1) - y.reshape(len(y), -1)).pow(2).mean()


def _model(shape, hidden, classes, bias, act):
    torch.manual_seed(0)
    d = 1
    for s in shape:
        d *= s
    return make_mlp(d, hidden, classes, bias, act, 1.0).double()


def _loss_and_grads(model, x, y, spec, chain, steps=2):
    """(losses, gradients of the last step) of ``steps`` penalised steps with one regulariser
    (lazy specs need more than one step to show both kinds of step)."""
    reg = build_regulariser(spec)
    torch.manual_seed(1)
    losses = []
    for _ in range(steps):
        loss = step_loss(model, ModelFront(model, x), [reg], _mse, x, y, chain=chain)
        losses.append(loss.detach())
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return torch.stack(losses), grads, reg


@pytest.mark.parametrize(("shape", "spec"), list(itertools.product(SHAPES, SPECS)))
def test_chain_equals_autograd_in_float64(shape, spec):
    model = _model(*shape)
    torch.manual_seed(2)
    x = torch.randn(12, *shape[0], dtype=torch.float64)
    y = torch.randn(12, shape[2], dtype=torch.float64)
    chain = ReluChain.of(model, ModelFront(model, x))
    assert chain is not None
    l0, g0, _ = _loss_and_grads(model, x, y, spec, None)
    l1, g1, reg = _loss_and_grads(model, x, y, spec, chain)
    assert reg.chain_ok is True  # the chain was taken and checked
    torch.testing.assert_close(l1, l0, rtol=1e-12, atol=0)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_path_autograd_never_takes_the_chain():
    model = _model(*SHAPES[1])
    x = torch.randn(8, 6, dtype=torch.float64)
    chain = ReluChain.of(model, ModelFront(model, x))
    _, _, reg = _loss_and_grads(model, x, torch.randn(8, 3).double(), "grokalign:path=autograd",
                                chain)  # fmt: skip
    assert reg.chain_ok is None


class Sub(nn.Sequential):
    def forward(self, x):  # a subclass may compute anything
        return super().forward(2 * x)


def _not_chains():
    lin = nn.Linear(4, 3)
    hooked = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    hooked[0].register_forward_hook(lambda m, a, o: o * 2)
    outer = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    outer.register_forward_hook(lambda m, a, o: o * 2)
    normed = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(4, 5)), nn.ReLU(),
                           nn.Linear(5, 2))  # fmt: skip
    backward = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    backward[2].register_full_backward_hook(lambda m, gi, go: (gi[0] * 2,))
    return {
        "backward hook": backward,
        "subclass": Sub(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)),
        "tanh": nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)),
        "leaky": nn.Sequential(nn.Linear(4, 5), nn.LeakyReLU(), nn.Linear(5, 2)),
        "two activations": nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.ReLU(), nn.Linear(5, 2)),
        "ends in relu": nn.Sequential(nn.Linear(4, 5), nn.ReLU()),
        "no layers": nn.Sequential(),
        "layer hook": hooked,
        "container hook": outer,
        "weight norm": normed,
        "not sequential": lin,
        "flatten(2)": nn.Sequential(nn.Flatten(2), nn.Linear(4, 2)),
        "conv": nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2)),
        "dropout": nn.Sequential(nn.Linear(4, 5), nn.Dropout(), nn.Linear(5, 2)),
    }


@pytest.mark.parametrize("name", list(_not_chains()))
def test_only_provable_relu_mlps_take_the_chain(name):
    model = _not_chains()[name]
    x = torch.randn(3, 1, 6) if name == "conv" else torch.randn(3, 4)
    if name == "flatten(2)":
        x = torch.randn(3, 1, 2, 2)
    assert ReluChain.of(model, ModelFront(model, x)) is None


def test_token_inputs_do_not_take_the_chain():
    model = nn.Sequential(nn.Embedding(9, 4), nn.Flatten(), nn.Linear(12, 2))
    assert ReluChain.of(model, ModelFront(model, torch.randint(0, 9, (3, 3)))) is None


def test_a_global_hook_disables_the_chain():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    handle = nn.modules.module.register_module_forward_hook(lambda m, a, o: None)
    try:
        assert ReluChain.of(model, ModelFront(model, torch.randn(3, 4))) is None
    finally:
        handle.remove()
    assert ReluChain.of(model, ModelFront(model, torch.randn(3, 4))) is not None


def _double(m, args, out):
    return out * 2


HOOKS = {  # registered after the chain was built (mid-run): each changes J or the output
    "layer forward hook": lambda model: model[2].register_forward_hook(_double),
    "container forward hook": lambda model: model.register_forward_hook(_double),
    "pre hook": lambda model: model[0].register_forward_pre_hook(lambda m, a: (a[0] * 3,)),
    "backward hook": lambda model: model[2].register_full_backward_hook(
        lambda m, gi, go: (gi[0] * 2,)
    ),
    "global hook": lambda model: nn.modules.module.register_module_forward_hook(
        lambda m, a, o: o * 2 if isinstance(m, nn.Linear) else None
    ),
}


@pytest.mark.parametrize("hook", list(HOOKS))
def test_a_hook_added_after_the_chain_was_built_sends_the_step_to_autograd(hook):
    """The chain is built once (Trainer construction) and checked on the first penalised step;
    a hook added later (mid-run) changed the Jacobian or the output (a container hook: the
    loss itself, the chain's forward skips it) while the chain went on (weights 3-7e-2 away
    from path=autograd after two epochs). Every step now re-checks the model."""
    model = _model(*SHAPES[1])
    x, y = torch.randn(10, 6, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    chain = ReluChain.of(model, ModelFront(model, x))
    _loss_and_grads(model, x, y, "grokalign:subsample=0.5", chain)  # checked, then the hook
    handle = HOOKS[hook](model)
    try:
        assert not chain.intact()
        l0, g0, _ = _loss_and_grads(model, x, y, "grokalign:subsample=0.5", None)
        l1, g1, _ = _loss_and_grads(model, x, y, "grokalign:subsample=0.5", chain)
    finally:
        handle.remove()
    assert chain.intact()  # the hook removed: the chain may be taken again
    torch.testing.assert_close(l1, l0, rtol=0, atol=0)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_replaced_layer_is_not_intact():
    model = _model(*SHAPES[1])
    chain = ReluChain.of(model, ModelFront(model, torch.randn(3, 6, dtype=torch.float64)))
    model[1] = nn.Tanh()
    assert not chain.intact()


def test_a_disagreement_falls_back_to_autograd_for_the_run(monkeypatch, caplog):
    model = _model(*SHAPES[1])
    x, y = torch.randn(10, 6, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    chain = ReluChain.of(model, ModelFront(model, x))
    wrong = ReluChain.vjp
    monkeypatch.setattr(ReluChain, "vjp", lambda self, v, rows=None: 1.5 * wrong(self, v, rows))
    l0, g0, _ = _loss_and_grads(model, x, y, "grokalign:subsample=0.5", None)
    with caplog.at_level(logging.WARNING, logger="alignctl"):
        l1, g1, reg = _loss_and_grads(model, x, y, "grokalign:subsample=0.5", chain)
    assert reg.chain_ok is False and "differs from autograd" in caplog.text
    torch.testing.assert_close(l1, l0, rtol=1e-12, atol=0)  # both steps: autograd's values
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_agrees_is_strict():
    a = torch.tensor([1.0, 2.0, 0.0])
    assert agrees(a, a * (1 + 1e-6))
    assert not agrees(a, a * 1.01)
    assert not agrees(a, torch.tensor([1.0, float("nan"), 0.0]))
    assert not agrees(a, a[:2])


def _cfg(spec):
    return {
        "model": {"arch": "mlp", "in_features": 8, "hidden": [16], "out_features": 1,
                  "bias": False},
        "data": {"task": "xor-cluster", "n_train": 32, "n_test": 32, "dim": 8, "eps": 0.05,
                 "seed": 0},
        "train": {"epochs": 3, "loss": "mse", "seed": 0,
                  "regularisers": [parse_reg_spec(spec)],
                  "optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": 0.1}},
    }  # fmt: skip


@pytest.mark.parametrize("spec", ["grokalign:lambda=1.0", "grokalign:lambda=1.0,subsample=0.25"])
def test_trainer_takes_the_chain_and_trains_as_autograd_does(tmp_path, spec):
    weights = {}
    for path in ("auto", "autograd"):
        cfg = config_from_dict(_cfg(f"{spec},path={path}"), tmp_path)
        (tmp_path / path / "checkpoints").mkdir(parents=True)
        tr = Trainer(tmp_path / path, cfg, "cpu")
        assert tr.chain is not None
        tr.fit(3)
        assert tr.regs[0].chain_ok is (True if path == "auto" else None)
        weights[path] = [p.detach().clone() for p in tr.model.parameters()]
    for a, b in zip(weights["auto"], weights["autograd"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)  # float32 summation order


def test_unknown_path_is_an_input_error():
    from alignctl.errors import InputError

    with pytest.raises(InputError, match="path must be one of auto, autograd"):
        build_regulariser("grokalign:path=double")
