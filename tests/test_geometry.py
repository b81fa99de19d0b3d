"""Every metric against a brute-force reference: torch.autograd.functional.jacobian in
float64, one sample at a time, metrics computed with numpy from their definitions."""

import numpy as np
import pytest
import torch
from torch import nn

import alignctl
from alignctl import METRICS
from alignctl.errors import InputError


def _cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))


def _row(J, y):
    if J.shape[0] == 1:
        return J[0] * (1.0 if y > 0 else -1.0)
    return J[y]


def _erank(J):
    s = np.linalg.svd(J, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _centred(J):
    """(I - 11^T / C) J; a scalar output (C = 1) has nothing to centre."""
    return J if J.shape[0] == 1 else J - J.mean(0, keepdims=True)


def _centred_row(J, y):
    if J.shape[0] == 1:
        return _row(J, y)
    others = np.delete(J, y, axis=0).mean(0)  # J_y - mean of the other rows = C/(C-1) J_c,y
    return (J[y] - others) * (J.shape[0] - 1) / J.shape[0]


def _full_alignment(J, x):
    n = np.linalg.norm(J)
    return 0.0 if n == 0 else float(np.linalg.norm(J @ (x / np.linalg.norm(x))) ** 2 / n**2)


# name -> f(J (C, d), x (d,), y): the definitions of the issue / paper, written independently.
REFERENCE = {
    "centroid_alignment": lambda J, x, y: _cos(x, J.sum(0)),
    "centroid_inner": lambda J, x, y: float(x @ J.sum(0)),
    "centroid_norm": lambda J, x, y: float(np.linalg.norm(J.sum(0))),
    "jacobian_alignment": lambda J, x, y: _cos(x, _row(J, y)),
    "jacobian_inner": lambda J, x, y: float(x @ _row(J, y)),
    "jacobian_alignment_full": lambda J, x, y: float(
        np.linalg.norm(J @ (x / np.linalg.norm(x))) ** 2 / np.linalg.norm(J) ** 2
    ),
    "jacobian_norm": lambda J, x, y: float(np.linalg.norm(J)),
    "jacobian_pc1": lambda J, x, y: float(
        np.linalg.svd(J, compute_uv=False)[0] ** 2 / (np.linalg.svd(J, compute_uv=False) ** 2).sum()
    ),
    "jacobian_erank": lambda J, x, y: _erank(J),
    "centred_label_alignment": lambda J, x, y: _cos(x, _centred_row(J, y)),
    "centred_label_norm": lambda J, x, y: float(np.linalg.norm(_centred_row(J, y))),
    "centred_alignment_full": lambda J, x, y: _full_alignment(_centred(J), x),
    "centred_norm": lambda J, x, y: float(np.linalg.norm(_centred(J))),
}


# Metrics of the network itself (needs="model", opt-in): their brute-force references live in
# their own tests, which loop over neurons and vertices.
MODEL_REFERENCE = {"local_complexity": "tests/test_regions.py::brute_local_complexity"}


def brute_force(model, x, y):
    """{metric: np.array (n,)} from per-sample float64 Jacobians."""
    model = model.double().eval()
    out = {name: [] for name in REFERENCE}
    for i in range(x.shape[0]):
        xi = x[i].double()
        J = torch.autograd.functional.jacobian(lambda a: model(a.unsqueeze(0)).reshape(-1), xi)
        J = J.reshape(-1, xi.numel()).numpy()
        for name, f in REFERENCE.items():
            out[name].append(f(J, xi.reshape(-1).numpy(), int(y[i])))
    return {k: np.array(v) for k, v in out.items()}


class ScalarNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(6, 16, bias=False), nn.ReLU(), nn.Linear(16, 1, bias=False)
        )

    def forward(self, x):
        return self.body(x).squeeze(-1)  # (n,)


def _cnn():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 5),
    )  # fmt: skip


class Skip(nn.Module):
    """x reaches the output through the first layer and a skip path: no J = J_h W shortcut."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.skip = nn.Linear(6, 10), nn.Linear(10, 4), nn.Linear(6, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x))) + self.skip(x)


def _near_rank_one():
    """Output weights u v^T + small noise: the Jacobian is close to rank one, which sends
    the float32 spectrum through its float64 refinement."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5))
    with torch.no_grad():
        net[3].weight.copy_(torch.randn(5, 1) @ torch.randn(1, 16) + 1e-3 * torch.randn(5, 16))
    return net


# name -> (model factory, input shape, number of classes)
MODELS = {
    "mlp_bias": (lambda: nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 4)), (8,), 4),
    "mlp_nobias": (
        lambda: nn.Sequential(
            nn.Linear(8, 12, bias=False),
            nn.ReLU(),
            nn.Linear(12, 12, bias=False),
            nn.ReLU(),
            nn.Linear(12, 3, bias=False),
        ),
        (8,),
        3,
    ),  # fmt: skip
    "cnn": (_cnn, (2, 8, 8), 5),
    "scalar": (ScalarNet, (6,), 1),
    "tanh_gelu": (
        lambda: nn.Sequential(
            nn.Linear(5, 9), nn.Tanh(), nn.Linear(9, 9), nn.GELU(), nn.Linear(9, 6)
        ),
        (5,),
        6,
    ),  # fmt: skip
    "skip": (Skip, (6,), 4),
    "near_rank_one": (_near_rank_one, (3, 4), 5),
    "wide_classes": (
        lambda: nn.Sequential(nn.Linear(3, 10), nn.Softplus(), nn.Linear(10, 7)),
        (3,),
        7,
    ),
}


def _case(name, n=9, seed=0):
    factory, shape, n_classes = MODELS[name]
    torch.manual_seed(seed)
    model = factory()
    x = torch.randn(n, *shape)
    y = torch.randint(0, 2, (n,)) if n_classes == 1 else torch.randint(0, n_classes, (n,))
    return model, x, y


def test_every_metric_has_a_reference():
    assert set(METRICS.names()) == set(REFERENCE) | set(MODEL_REFERENCE)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_float64_matches_brute_force(model_name):
    model, x, y = _case(model_name)
    ref = brute_force(model, x, y)
    got = alignctl.measure(model.double(), x.double(), y, dtype=torch.float64)
    for name in REFERENCE:
        np.testing.assert_allclose(got[name].numpy(), ref[name], rtol=1e-9, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_float32_matches_brute_force(model_name):
    model, x, y = _case(model_name, seed=1)
    ref = brute_force(_copy(model), x, y)
    got = alignctl.measure(model.float(), x.float(), y)
    for name in REFERENCE:
        assert got[name].dtype == torch.float32
        np.testing.assert_allclose(got[name].numpy(), ref[name], rtol=1e-4, atol=1e-4, err_msg=name)


def _copy(model):
    import copy

    return copy.deepcopy(model)


def test_measure_does_not_change_the_callers_model():
    model, x, y = _case("mlp_bias")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    alignctl.measure(model, x, y, dtype=torch.float64)
    assert model.training
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_jacobian_matches_autograd():
    model, x, _ = _case("cnn", n=4)
    J = alignctl.jacobian(model.double(), x.double())
    assert J.shape == (4, 5, 2 * 8 * 8)
    for i in range(4):
        ref = torch.autograd.functional.jacobian(lambda a: model(a.unsqueeze(0))[0], x[i].double())
        torch.testing.assert_close(J[i], ref.reshape(5, -1), rtol=1e-12, atol=1e-12)


def test_rank_one_jacobian_is_aligned():
    """f(x) = c * (x . x) / 2 has J = c x^T: alignment_full = pc1 = erank = 1."""

    class RankOne(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 3.0]))

        def forward(self, x):
            return 0.5 * (x * x).sum(-1, keepdim=True) * self.c  # (n, 4)

    x = torch.randn(6, 11)
    for dtype in (torch.float32, torch.float64):
        got = alignctl.measure(
            RankOne(),
            x,
            metrics=["jacobian_alignment_full", "jacobian_pc1", "jacobian_erank"],
            dtype=dtype,
        )
        for name, v in got.items():
            torch.testing.assert_close(
                v,
                torch.ones(6, dtype=dtype),
                rtol=0,
                atol=1e-6 if dtype == torch.float32 else 1e-12,
                msg=name,
            )


def test_linear_model_centroid_is_column_sum():
    lin = nn.Linear(7, 3).double()
    x = torch.randn(5, 7, dtype=torch.float64)
    mu = lin.weight.sum(0).detach()  # W^T 1
    got = alignctl.measure(lin, x, metrics=["centroid_inner", "centroid_norm"])
    torch.testing.assert_close(got["centroid_inner"], x @ mu)
    torch.testing.assert_close(got["centroid_norm"], mu.norm().expand(5))


def test_batch_size_invariance():
    model, x, y = _case("mlp_nobias", n=23)
    ref = alignctl.measure(model, x, y, dtype=torch.float64)
    for bs in (1, 4, 7, 100):
        got = alignctl.measure(model, x, y, dtype=torch.float64, batch_size=bs)
        for name in ref:
            torch.testing.assert_close(got[name], ref[name], rtol=1e-12, atol=1e-12)


def test_centroid_only_path_equals_full_path():
    model, x, y = _case("tanh_gelu", n=10)
    full = alignctl.measure(model, x, y, dtype=torch.float64)
    fast = alignctl.measure(
        model, x, y, metrics=["centroid_alignment", "jacobian_alignment"], dtype=torch.float64
    )
    for name, v in fast.items():
        torch.testing.assert_close(v, full[name], rtol=1e-12, atol=1e-12)


def test_eval_mode_for_dropout_and_batchnorm():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Linear(6, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Dropout(0.5), nn.Linear(10, 3)
    )
    model.train()
    x = torch.randn(32, 6)
    model(x)  # running statistics move away from their initial values
    model[1].running_mean.add_(0.3)
    y = torch.randint(0, 3, (32,))
    ref = brute_force(_copy(model), x, y)  # brute force is one sample at a time, in eval mode
    got = alignctl.measure(model, x, y, dtype=torch.float64, batch_size=5)
    assert model.training and model[3].training
    for name in REFERENCE:
        np.testing.assert_allclose(got[name].numpy(), ref[name], rtol=1e-9, atol=1e-9)


def test_token_model_jacobian_is_taken_at_the_embedding():
    class Tok(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 4)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 5))

        def embed(self, tokens):
            return self.emb(tokens)  # (n, 3, 4)

        def forward_embedded(self, e):
            return self.head(e)

        def forward(self, tokens):
            return self.forward_embedded(self.embed(tokens))

    torch.manual_seed(0)
    model = Tok().double()
    tokens = torch.randint(0, 5, (6, 3))
    y = torch.randint(0, 5, (6,))
    e = model.embed(tokens).detach()
    ref = brute_force(model.head, e, y)
    got = alignctl.measure(model, tokens, y)
    for name in REFERENCE:
        np.testing.assert_allclose(got[name].numpy(), ref[name], rtol=1e-9, atol=1e-9)


def test_scalar_labels_in_both_conventions():
    model, x, y01 = _case("scalar")
    a = alignctl.measure(model, x, y01, metrics=["jacobian_alignment"])
    b = alignctl.measure(model, x, y01 * 2 - 1, metrics=["jacobian_alignment"])
    torch.testing.assert_close(a["jacobian_alignment"], b["jacobian_alignment"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metrics": ["nope"]}, "unknown metric"),
        ({"y": torch.tensor([0, 9, 0, 0, 0, 0, 0, 0, 0])}, "out of range"),
        ({"y": torch.tensor([0, 1])}, "labels for"),
    ],
)
def test_bad_input_is_an_input_error(kwargs, message):
    model, x, _ = _case("mlp_bias")
    with pytest.raises(InputError, match=message):
        alignctl.measure(model, x, **kwargs)


def test_label_metric_without_labels_is_an_input_error():
    model, x, _ = _case("mlp_bias")
    with pytest.raises(InputError, match="needs labels"):
        alignctl.measure(model, x, metrics=["jacobian_alignment"])
    assert "jacobian_alignment" not in alignctl.measure(model, x)


@pytest.mark.parametrize(
    "model_name, expected",
    [("mlp_bias", True), ("mlp_nobias", True), ("near_rank_one", True), ("cnn", False),
     ("skip", False), ("scalar", True)],
)  # fmt: skip
def test_input_linear_layer_is_found_only_when_it_is_the_only_path(model_name, expected):
    from alignctl.geometry.linear_input import find_input_linear

    model, x, _ = _case(model_name)
    assert (find_input_linear(model, model, x[:1]) is not None) is expected


def test_near_rank_one_spectrum_is_refined_in_float64():
    from alignctl.geometry.metrics.quantities import Quantities, singular_values

    model, x, y = _case("near_rank_one")
    jac = alignctl.jacobian(model, x)
    q = Quantities(x.reshape(9, -1), jac=jac)  # float32: the Gram path
    sv = singular_values(q) * q.j_scale.unsqueeze(-1)  # of J scaled by a power of two
    ref = torch.linalg.svdvals(jac.double())
    assert (sv[:, 1] / sv[:, 0]).max() < 0.1  # the case the refinement is for
    torch.testing.assert_close(sv, ref, rtol=0, atol=1e-6 * float(ref.max()))
