"""Regularisers against brute force and hand computations (SETUPS.md, "public reference code"),
spec parsing, and one training step for every registered regulariser."""

import copy
import io
import math

import pytest
import torch
from torch import nn

from alignctl.errors import InputError
from alignctl.evaluation.losses import cross_entropy
from alignctl.geometry.inputs import ModelFront
from alignctl.train.regularisers import REGULARISERS, build_regulariser, parse_reg_spec
from alignctl.train.regularisers.grokalign import GrokAlign, frobenius_estimate
from alignctl.train.regularisers.grokfast import Grokfast
from alignctl.train.regularisers.grokunalign import GrokUnAlign
from alignctl.train.regularisers.orthograd import OrthoGrad
from alignctl.train.step import step_loss


def mlp(out=3) -> nn.Module:
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, out))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 2), nn.Tanh(), nn.Flatten(),
        nn.Linear(2 * 3 * 3, 4),
    )  # fmt: skip


def model_and_input(kind: str):
    torch.manual_seed(0)
    if kind == "mlp":
        return mlp().double(), torch.randn(6, 5, dtype=torch.float64)
    return cnn().double(), torch.randn(5, 1, 6, 6, dtype=torch.float64)


def brute_force_fro2(model, x) -> torch.Tensor:
    """norm(J)_F^2 per sample, from the full Jacobian of each sample on its own."""
    rows = []
    for xi in x:
        J = torch.autograd.functional.jacobian(lambda a: model(a.unsqueeze(0))[0], xi)
        rows.append(J.pow(2).sum())
    return torch.stack(rows)


def forward(model, x):
    x = x.detach().clone().requires_grad_(True)
    return x, model(x)


# -- GrokAlign --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_exact_estimate_equals_brute_force(kind):
    model, x = model_and_input(kind)
    want = brute_force_fro2(model, x)
    xg, out = forward(model, x)
    est = frobenius_estimate(xg, out, "exact")
    assert est.shape == (x.shape[0],)
    torch.testing.assert_close(est, want, rtol=1e-10, atol=1e-12)
    fro2 = GrokAlign(lam=0.7, n_proj="exact", norm="fro2").penalty(model, xg, out, None)
    fro = GrokAlign(lam=0.7, n_proj="exact", norm="fro").penalty(model, xg, out, None)
    assert fro2.item() == pytest.approx(0.7 * want.mean().item(), rel=1e-10)
    assert fro.item() == pytest.approx(0.7 * want.sqrt().mean().item(), rel=1e-10)


@pytest.mark.parametrize("n_proj", [1, 4])
def test_random_projections_are_unbiased(n_proj):
    """Each sample repeated 5000 / n_proj times: 20000 draws per sample in all."""
    model, x = model_and_input("mlp")
    want = brute_force_fro2(model, x[:4])
    reps = 5000 // n_proj
    xg, out = forward(model, x[:4].repeat_interleave(reps, 0))  # (4 * reps, 5)
    torch.manual_seed(1)
    est = frobenius_estimate(xg, out, n_proj).detach().reshape(4, reps).mean(1)
    torch.testing.assert_close(est, want, rtol=0.02, atol=0)
    # one draw is not the exact value: the test above measures an average
    xg, out = forward(model, x[:4])
    assert not torch.allclose(frobenius_estimate(xg, out, 1), want, rtol=0.05)


@pytest.mark.parametrize("shape", [(), (1,)])
def test_scalar_output_one_projection_is_exact(shape):
    torch.manual_seed(0)
    model = mlp(out=1).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    want = brute_force_fro2(model, x)
    xg, out = forward(model, x)
    out = out.reshape(6, *shape)
    torch.testing.assert_close(frobenius_estimate(xg, out, 1), want, rtol=1e-10, atol=0)


@pytest.mark.parametrize("norm", ["fro", "fro2"])
@pytest.mark.parametrize("reg", [GrokAlign, GrokUnAlign])
def test_penalty_gradient_reaches_every_parameter(norm, reg):
    model, x = model_and_input("cnn")
    xg, out = forward(model, x)
    reg(lam=1.0, norm=norm).penalty(model, xg, out, None).backward()
    for name, p in model.named_parameters():
        if name == "5.bias":
            continue  # the last layer's bias does not enter the Jacobian
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_grokunalign_is_minus_grokalign_with_the_same_seed():
    model, x = model_and_input("mlp")
    xg, out = forward(model, x)
    torch.manual_seed(3)
    a = GrokAlign(lam=0.3).penalty(model, xg, out, None)
    torch.manual_seed(3)
    b = GrokUnAlign(lam=0.3).penalty(model, xg, out, None)
    assert a.item() > 0
    assert b.item() == -a.item()


def dead_relu_net() -> nn.Module:
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    with torch.no_grad():
        net[0].weight.fill_(-1.0)  # positive inputs -> every pre-activation negative
        net[0].bias.fill_(-1.0)
    return net


def test_eps_clamp_gives_finite_gradient_when_the_jacobian_is_zero():
    net = dead_relu_net()
    xg, out = forward(net, torch.rand(3, 4))
    est = frobenius_estimate(xg, out, "exact")
    assert est.abs().max().item() == 0.0  # J = 0
    pen = GrokAlign(lam=1.0, norm="fro", eps=1e-8).penalty(net, xg, out, None)
    assert pen.item() == pytest.approx(math.sqrt(1e-8))
    pen.backward()
    grads = torch.cat([p.grad.reshape(-1) for p in net.parameters() if p.grad is not None])
    assert bool(torch.isfinite(grads).all())
    with pytest.raises(ValueError, match="eps"):  # eps = 0: sqrt'(0) = inf, 0 * inf = NaN
        GrokAlign(lam=1.0, norm="fro", eps=0.0)


# -- Grokfast ---------------------------------------------------------------------------------
class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(2))
        self.b = nn.Parameter(torch.zeros(1))


def feed(reg, model, grads_a, in_place=True):
    """Hand reg each gradient in turn, zeroing p.grad in place as optimizers do; returns a.grad."""
    seen = []
    for g in grads_a:
        for p, val in ((model.a, torch.tensor(g)), (model.b, torch.tensor([1.0]))):
            if in_place and p.grad is not None:
                p.grad.zero_()
                p.grad.add_(val)
            else:
                p.grad = val.clone()
        reg.after_backward(model)
        seen.append(model.a.grad.tolist())
    return seen


@pytest.mark.parametrize("in_place", [True, False])
def test_grokfast_ema_by_hand(in_place):
    # alpha 0.5, lamb 2; g = (1, 2), (3, -1), (0, 4)
    # m1 = (1, 2)                        -> g + 2 m = (3, 6)
    # m2 = 0.5 (1, 2) + 0.5 (3, -1) = (2, 0.5)   -> (3, -1) + (4, 1) = (7, 0)
    # m3 = 0.5 (2, 0.5) + 0.5 (0, 4) = (1, 2.25) -> (0, 4) + (2, 4.5) = (2, 8.5)
    reg = Grokfast(alpha=0.5, lamb=2.0)
    seen = feed(reg, Two(), [[1.0, 2.0], [3.0, -1.0], [0.0, 4.0]], in_place)
    assert seen == [[3.0, 6.0], [7.0, 0.0], [2.0, 8.5]]


@pytest.mark.parametrize("in_place", [True, False])
def test_grokfast_ma_window(in_place):
    # window 3, lamb 1: unchanged until full; then g + mean of the last 3 raw gradients
    reg = Grokfast(lamb=1.0, filter="ma", window=3)
    g = [[3.0, 0.0], [0.0, 3.0], [6.0, 6.0], [-3.0, 0.0]]
    seen = feed(reg, Two(), g, in_place)
    assert seen == [[3.0, 0.0], [0.0, 3.0], [9.0, 9.0], [-2.0, 3.0]]


def round_trip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("spec", [{"filter": "ema"}, {"filter": "ma", "window": 3}])
@pytest.mark.parametrize("before", [1, 2, 4])
def test_grokfast_state_round_trip(spec, before):
    grads = [[float(i), float(i * i % 5) - 2] for i in range(before + 3)]
    first = Grokfast(lamb=0.5, **spec)
    feed(first, Two(), grads[:before])
    second = Grokfast(lamb=0.5, **spec)
    second.load_state_dict(round_trip(first.state_dict()))
    assert feed(second, Two(), grads[before:]) == feed(first, Two(), grads[before:])


def test_grokfast_rejects_bad_filter():
    with pytest.raises(InputError, match="filter"):
        build_regulariser("grokfast:filter=median")


@pytest.mark.parametrize("window", [0, -1])
def test_grokfast_rejects_empty_window(window):
    with pytest.raises(InputError, match="window"):
        build_regulariser(f"grokfast:filter=ma,window={window}")


# -- OrthoGrad --------------------------------------------------------------------------------
def orth_model(wa, ga, wb, gb) -> nn.Module:
    m = Two()
    m.a, m.b = nn.Parameter(torch.tensor(wa)), nn.Parameter(torch.tensor(wb))
    m.a.grad, m.b.grad = torch.tensor(ga), torch.tensor(gb)
    return m


def test_orthograd_by_hand_per_tensor():
    # a: w = [[1,0],[0,0]], g = [[1,1],[0,0]]: w.g = 1, w.w = 1, g_perp = [[0,1],[0,0]],
    #    rescaled to norm(g) = sqrt 2 -> [[0, sqrt 2], [0, 0]]
    # b: w = (3, 4), g = (1, 0): g_perp = (1, 0) - 3/25 (3, 4) = (16, -12)/25, norm 0.8,
    #    rescaled to 1 -> (0.8, -0.6). Flattening both tensors together would give other values.
    m = orth_model([[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]], [3.0, 4.0], [1.0, 0.0])
    OrthoGrad().after_backward(m)
    torch.testing.assert_close(m.a.grad, torch.tensor([[0.0, math.sqrt(2)], [0.0, 0.0]]))
    torch.testing.assert_close(m.b.grad, torch.tensor([0.8, -0.6]))


def test_orthograd_orthogonal_and_norm_preserving():
    torch.manual_seed(0)
    net = mlp()
    net(torch.randn(8, 5)).pow(2).sum().backward()
    before = {n: p.grad.clone() for n, p in net.named_parameters()}
    OrthoGrad().after_backward(net)
    for n, p in net.named_parameters():
        w, g = p.detach().reshape(-1), p.grad.reshape(-1)
        assert abs((w @ g).item()) < 1e-5 * w.norm().item() * g.norm().item(), n
        assert g.norm().item() == pytest.approx(before[n].norm().item(), rel=1e-5), n
        assert not torch.allclose(p.grad, before[n]), n


def test_orthograd_zero_weights_leave_gradient_unchanged():
    m = orth_model([0.0, 0.0], [1.5, -2.0], [0.0], [3.0])
    OrthoGrad().after_backward(m)
    assert m.a.grad.tolist() == [1.5, -2.0]
    assert m.b.grad.tolist() == [3.0]


# -- specs ------------------------------------------------------------------------------------
def test_parse_reg_spec_types_values():
    spec = parse_reg_spec("grokalign:lambda=0.01,n_proj=2,flag=true,other=False,n=exact,e=1e-3")
    assert spec == {"name": "grokalign", "lambda": 0.01, "n_proj": 2, "flag": True,
                    "other": False, "n": "exact", "e": 0.001}  # fmt: skip
    assert type(spec["n_proj"]) is int and type(spec["lambda"]) is float
    assert type(spec["flag"]) is bool
    assert parse_reg_spec("orthograd") == {"name": "orthograd"}
    assert parse_reg_spec(" grokfast:alpha = 0.5 , ") == {"name": "grokfast", "alpha": 0.5}


def test_build_regulariser_passes_typed_values_and_defaults():
    r = build_regulariser("grokalign:lambda=0.5,n_proj=exact,norm=fro2")
    assert (type(r), r.lam, r.n_proj, r.norm) == (GrokAlign, 0.5, "exact", "fro2")
    r = build_regulariser({"name": "grokalign", "n_proj": 3}, defaults={"lambda": 2, "n_proj": 1})
    assert (r.lam, r.n_proj) == (2.0, 3)  # the spec wins over the defaults
    g = build_regulariser("grokfast:filter=ma,window=7")
    assert (g.filter, g.window) == ("ma", 7)


@pytest.mark.parametrize(
    "text", ["", ":lambda=1", "grokalign:lambda", "grokalign:=1", "grokalign:lambda="]
)
def test_malformed_specs_are_input_errors(text):
    with pytest.raises(InputError, match="regulariser"):
        build_regulariser(text)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(InputError) as e:
        build_regulariser("grokalighn")
    assert ", ".join(REGULARISERS.names()) in str(e.value)


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(InputError, match="unknown parameter.*lr.*valid: lambda, n_proj, norm, eps"):
        build_regulariser("grokalign:lr=1")
    with pytest.raises(InputError, match="valid: alpha, lamb, filter, window"):
        build_regulariser({"name": "grokfast", "lambda": 1})


@pytest.mark.parametrize(
    "text", ["grokalign:norm=l1", "grokalign:n_proj=0", "grokalign:n_proj=1.5",
             "grokalign:n_proj=many", "grokalign:lambda=abc"],
)  # fmt: skip
def test_bad_values_are_input_errors(text):
    with pytest.raises(InputError, match="regulariser grokalign"):
        build_regulariser(text)


# -- every registered regulariser -------------------------------------------------------------
EXTRA = [
    "grokfast:filter=ma,window=2",
    "grokalign:n_proj=exact,norm=fro2",
    "grokalign:n_proj=3",
    "grokalign:subsample=0.25",
    "grokunalign:subsample=0.5,every=2",
]


def step(reg, model, opt, x, y) -> torch.Tensor:
    """One step in the order of alignctl.train.step.StepMixin.train_step, with its step_loss."""
    model.train()
    xb = reg.transform_batch(model, x, y, cross_entropy)
    loss = step_loss(model, ModelFront(model, xb), [reg], cross_entropy, xb, y)
    opt.zero_grad(set_to_none=False)  # in place: stored gradients must be copies
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    reg.after_backward(model)
    opt.step()
    return loss.detach()


@pytest.mark.parametrize("spec", [*REGULARISERS.names(), *EXTRA])
def test_every_regulariser_trains_and_resumes(spec):
    torch.manual_seed(0)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    model = mlp()
    start = copy.deepcopy(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    reg = build_regulariser(spec)
    for _ in range(2):
        assert torch.isfinite(step(reg, model, opt, x, y))
    assert any(not torch.equal(p, start[n]) for n, p in model.state_dict().items())
    # resume: a fresh regulariser from the saved state continues exactly like the original
    twin = copy.deepcopy(model)
    twin_opt = torch.optim.AdamW(twin.parameters(), lr=1e-2)
    twin_opt.load_state_dict(round_trip(opt.state_dict()))
    resumed = build_regulariser(spec)
    resumed.load_state_dict(round_trip(reg.state_dict()))
    for _ in range(2):
        torch.manual_seed(5)
        a = step(reg, model, opt, x, y)
        torch.manual_seed(5)
        b = step(resumed, twin, twin_opt, x, y)
        assert torch.equal(a, b)
    for (n, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q), n
