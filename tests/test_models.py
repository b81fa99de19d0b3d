"""Models: registry-driven builds, forward passes checked against hand-written formulas,
the token-model protocol, and every error path of build_model / factories."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from alignctl.errors import InputError
from alignctl.runs.factories import call_factory, load_callable
from alignctl.runs.models import MODELS, build_model


def _build(arch: str, seed: int = 0, **over):
    fn = MODELS.get(arch)
    torch.manual_seed(seed)
    return build_model({"arch": arch, **getattr(fn, "test_params", {}), **over}, Path("."))


@pytest.mark.parametrize("arch", MODELS.names())
def test_every_arch_builds_and_runs(arch):
    fn = MODELS.get(arch)
    model = _build(arch)
    x = fn.test_input()
    out = model(x)
    assert out.ndim == 2 and out.shape[0] == x.shape[0]
    assert torch.isfinite(out).all()
    # deterministic from the seed, different across seeds
    same, other = _build(arch), _build(arch, seed=1)
    for (n, a), b in zip(model.state_dict().items(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    pairs = zip(model.parameters(), other.parameters(), strict=True)
    assert any(not torch.equal(a, c) for a, c in pairs)


def test_mlp_matches_formula():
    model = _build("mlp", in_features=4, hidden=[3], out_features=2, activation="tanh")
    w1, b1, w2, b2 = (p.detach() for p in model.parameters())
    x = torch.randn(5, 4)
    expected = torch.tanh(x @ w1.T + b1) @ w2.T + b2
    torch.testing.assert_close(model(x), expected)


def test_quadratic_mlp_is_square_activation_without_bias():
    model = _build("quadratic-mlp", in_features=4, hidden=[3], out_features=2, bias=False)
    w1, w2 = (p.detach() for p in model.parameters())
    x = torch.randn(5, 4)
    torch.testing.assert_close(model(x), ((x @ w1.T) ** 2) @ w2.T)


def test_init_scale_multiplies_all_parameters():
    base = _build("mlp", seed=3)
    big = _build("mlp", seed=3, init_scale=8.0)
    for a, b in zip(base.parameters(), big.parameters(), strict=True):
        torch.testing.assert_close(b, 8.0 * a)


def test_mlp_bias_false_has_no_bias():
    model = _build("mlp", bias=False)
    assert all("bias" not in n for n, _ in model.named_parameters())


def test_cnn_paper_shape_pools_to_one_pixel():
    torch.manual_seed(0)
    model = build_model({"arch": "cnn"}, Path("."))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256, 512]
    fcs = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert (fcs[0].in_features, fcs[0].out_features, fcs[1].out_features) == (512, 256, 10)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def _reference_transformer(m, tokens):
    """Per-sample, per-head loops: an independent reading of the module docstring."""
    outs = []
    for t in tokens:
        e = m.W_E[t] + m.W_pos[: len(t)]  # (L, d)
        L, d = e.shape
        z = torch.zeros(L, d)
        for h in range(m.n_heads):
            sl = slice(h * m.d_head, (h + 1) * m.d_head)
            q, k, v = e @ m.W_Q[:, sl], e @ m.W_K[:, sl], e @ m.W_V[:, sl]
            for i in range(L):
                s = torch.stack([q[i] @ k[j] for j in range(i + 1)]) / math.sqrt(m.d_head)
                z[i, sl] = torch.softmax(s, 0) @ v[: i + 1]
        r = e + z @ m.W_O
        r = r + torch.relu(r @ m.W_in + m.b_in) @ m.W_out + m.b_out
        outs.append(r[-1] @ m.W_U)
    return torch.stack(outs)


def test_transformer_token_protocol_and_reference():
    model = _build("transformer")
    tokens = torch.tensor([[0, 1, 5], [4, 2, 5], [3, 3, 5]])
    e = model.embed(tokens)
    assert e.shape == (3, 3, 8)
    torch.testing.assert_close(model(tokens), model.forward_embedded(e))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), _reference_transformer(model, tokens))
    assert model(tokens).shape == (3, 5)  # out_features defaults to p


def test_unknown_arch_and_kwargs_list_valid_names():
    with pytest.raises(InputError, match="valid: .*mlp"):
        build_model({"arch": "resnet"}, Path("."))
    with pytest.raises(InputError, match=r"unknown parameter\(s\) widht; valid: .*hidden"):
        build_model({"arch": "mlp", "in_features": 2, "out_features": 1, "widht": 3}, Path("."))
    with pytest.raises(InputError, match="missing required parameter.*hidden"):
        build_model({"arch": "mlp", "in_features": 2, "out_features": 1}, Path("."))
    with pytest.raises(InputError, match="activation"):
        build_model({"arch": "mlp", **MODELS.get("mlp").test_params, "activation": "relu6"}, ".")
    with pytest.raises(InputError, match="exactly one"):
        build_model({"arch": "mlp", "factory": "x.py:f"}, Path("."))
    with pytest.raises(InputError, match="exactly one"):
        build_model({}, Path("."))


def test_factory_builds_model_with_sibling_import(tmp_path):
    (tmp_path / "helper_widths.py").write_text("WIDTH = 7\n")
    (tmp_path / "net.py").write_text(
        "import torch\nfrom helper_widths import WIDTH\n"
        "def make(n_in=3):\n    return torch.nn.Linear(n_in, WIDTH)\n"
        "def bad():\n    return 42\n"
        "def boom(**kw):\n    raise RuntimeError('kaboom')\n"
    )
    m = build_model({"factory": "net.py:make", "kwargs": {"n_in": 4}}, tmp_path)
    assert isinstance(m, torch.nn.Linear) and (m.in_features, m.out_features) == (4, 7)
    with pytest.raises(InputError, match="returned int, not a torch.nn.Module"):
        build_model({"factory": "net.py:bad"}, tmp_path)
    with pytest.raises(InputError, match=r"model factory net.py:boom failed: RuntimeError: kaboom"):
        build_model({"factory": "net.py:boom"}, tmp_path)
    with pytest.raises(InputError, match="unknown key"):
        build_model({"factory": "net.py:make", "params": {}}, tmp_path)


def test_factory_error_paths(tmp_path):
    (tmp_path / "f.py").write_text("X = 1\ndef g():\n    return 1\n")
    (tmp_path / "broken.py").write_text("raise ImportError('no numpy here')\n")
    with pytest.raises(InputError, match="not found"):
        load_callable("missing.py:f", tmp_path)
    with pytest.raises(InputError, match="has no attribute 'h'"):
        load_callable("f.py:h", tmp_path)
    with pytest.raises(InputError, match="not callable"):
        load_callable("f.py:X", tmp_path)
    with pytest.raises(InputError, match="bad factory spec"):
        load_callable("f.py", tmp_path)
    with pytest.raises(InputError, match="importing .*broken.py failed: ImportError"):
        load_callable("broken.py:g", tmp_path)
    with pytest.raises(InputError, match="cannot be imported"):
        load_callable("no_such_pkg_xyz.mod:f", tmp_path)
    assert load_callable("math:sqrt", tmp_path)(9.0) == 3.0
    with pytest.raises(InputError, match="data factory f.py:g failed: TypeError"):
        call_factory("f.py:g", tmp_path, {"unexpected": 1}, "data")
