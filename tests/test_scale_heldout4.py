"""Held-out checks of issue 17 (real architectures, many classes) after the geometry engine's
independence checks and the linear-input shortcut's per-chunk proofs: models that must be
measured, not refused as "samples interact", and whose values equal a float64 reference."""

import warnings

import numpy as np
import pytest
import torch
from test_geometry import REFERENCE
from torch import nn

import alignctl
from alignctl.errors import InputError


def tokens(n, length=10, seed=0):
    """Right-padded token sequences (pad id 0; 0-4 pads each, never the first position)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(1, 96, (n, length), generator=g)
    for i in range(n):
        pads = int(torch.randint(0, length // 2, (1,), generator=g))
        if pads:
            t[i, length - pads :] = 0
    return t


class PaddedEncoder(nn.Module):
    """nn.TransformerEncoder with a key padding mask, pooled over every position (padding
    too): PyTorch's eval-mode fast path (nested tensors, taken only when nothing needs a
    gradient) gives padded positions 0 where the differentiable path computes them, so its
    logits are not those of a gradient-taking forward pass, at any batch size."""

    def __init__(self, pool="all"):
        super().__init__()
        self.emb = nn.Embedding(96, 32, padding_idx=0)
        layer = nn.TransformerEncoderLayer(32, 2, 64, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(32, 6)
        self.pool = pool

    def forward(self, t):
        h = self.enc(self.emb(t), src_key_padding_mask=t == 0)
        return self.head(h.mean(1) if self.pool == "all" else h[:, -1])


def at_embedding_reference(model, emb, t, y):
    """{metric: (n,)} from float64 per-sample Jacobians at the embedding's output, in
    gradient mode (the path a Jacobian is taken through)."""
    model = model.double().eval()
    out = {k: [] for k in REFERENCE}
    for i in range(t.shape[0]):
        ti = t[i : i + 1]
        e0 = emb(ti).detach().requires_grad_(True)

        def f(e, ti=ti):
            hook = emb.register_forward_hook(lambda m, a, o: e)
            try:
                return model(ti).reshape(-1)
            finally:
                hook.remove()

        jac = torch.autograd.functional.jacobian(f, e0).reshape(-1, e0.numel()).numpy()
        for k, fn in REFERENCE.items():
            out[k].append(fn(jac, e0.detach().reshape(-1).numpy(), int(y[i])))
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("frozen", ["all", "encoder"])
@pytest.mark.parametrize("pool", ["all", "last"])
def test_a_frozen_padded_transformer_encoder_is_measured_not_refused(frozen, pool):
    """Before: 'the model's outputs for a sample depend on the other samples of its batch (the
    first 8 of 12 samples run alone change their logits by 0.62 ...)': the chunk check ran
    its 8 samples without gradients, which a frozen encoder answers through the fast path."""
    torch.manual_seed(0)
    model = PaddedEncoder(pool).eval()
    (model if frozen == "all" else model.enc).requires_grad_(False)
    t, y = tokens(12), torch.arange(12) % 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's nested-tensor notices
        got = alignctl.measure(model, t, y, metrics="standard", max_memory="64MiB")
        ref = at_embedding_reference(model, model.emb, t[:4], y[:4])
    for name, values in got.items():
        np.testing.assert_allclose(values[:4].numpy(), ref[name], rtol=2e-4, atol=2e-5,
                                   err_msg=name)  # fmt: skip


class CentredHidden(nn.Module):
    """Batch centring of the hidden layer in eval mode (through the values, or through the
    gradient only); the head zero, as torchvision's ViT initialises its head."""

    def __init__(self, grad_only: bool):
        super().__init__()
        self.fc, self.head = nn.Linear(12, 16), nn.Linear(16, 4)
        nn.init.zeros_(self.head.weight)
        self.grad_only = grad_only

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        m = h.mean(0, keepdim=True)
        return self.head(h - (m - m.detach()) if self.grad_only else h - m)


@pytest.mark.parametrize("grad_only", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_a_zero_head_checkpoint_does_not_clear_a_coupled_model_for_later_ones(grad_only, bias):
    """analyze measures every checkpoint with one model object. Before: the step-0 checkpoint
    (logits all 0, or all the head's bias; input gradients 0) passed the once-per-model
    independence checks vacuously, and the later checkpoints of a batch-centring model were
    measured silently (centroid_alignment 0.174, -0.331, ... for chunks of 6, other values
    per chunk size). After: a check that could not see coupling is made again on the next
    measurement, which refuses the model."""
    torch.manual_seed(0)
    model = CentredHidden(grad_only).eval()
    if bias:
        nn.init.normal_(model.head.bias)
    x = torch.randn(6, 12)
    alignctl.measure(model, x, metrics="centroid_alignment")  # nothing to see at step 0
    with torch.no_grad():
        model.head.weight.normal_()  # the next checkpoint, loaded into the same object
    with pytest.raises(InputError, match="depend on the other samples of its batch"):
        alignctl.measure(model, x, metrics="centroid_alignment", batch_size=6)


MODELS_PY = """
import torch
from torch import nn


class CentredHidden(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(12, 16), nn.Linear(16, 4)

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        return self.head(h - h.mean(0, keepdim=True))


def make():
    return CentredHidden()
"""


def test_analyze_refuses_a_coupled_model_whose_first_checkpoint_has_a_zero_head(tmp_path):
    """Before: exit 0, step 1 reported centroid_norm 3.7e-08 (the batch-centred sum, not any
    sample's); after: one error line, exit 2, no report written."""
    import yaml
    from typer.testing import CliRunner

    from alignctl.cli.assemble import app
    from alignctl.runs.checkpoints import write_checkpoint

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "models.py").write_text(MODELS_PY)
    torch.manual_seed(0)
    x, y = torch.randn(6, 12), torch.randint(0, 4, (6,))
    np.savez(run / "data.npz", x_train=x.numpy(), y_train=y.numpy(),
             x_test=x.numpy(), y_test=y.numpy())  # fmt: skip
    cfg = {"model": {"factory": "models.py:make"}, "data": {"path": "data.npz"}}
    (run / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    net = nn.Sequential()
    net.fc, net.head = nn.Linear(12, 16), nn.Linear(16, 4)
    state = net.state_dict()
    zero = {**state, "head.weight": torch.zeros_like(state["head.weight"])}
    write_checkpoint(run / "checkpoints/step_0.safetensors", zero, {"step": 0})
    write_checkpoint(run / "checkpoints/step_1.safetensors", state, {"step": 1})
    out = tmp_path / "report.json"
    r = CliRunner().invoke(app, ["analyze", str(run), "--device", "cpu", "--no-cache",
                                 "--metrics", "fast", "--json", str(out)])  # fmt: skip
    assert r.exit_code == 2, r.stdout
    err = r.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "depend on the other samples of its batch" in err
    assert not out.exists()


def test_a_zero_head_checkpoint_does_not_prove_measure_logits_equal_predicts(tmp_path, monkeypatch):
    """analyze takes the train accuracy from measure()'s logits once they were bit-identical
    to predict()'s; a model whose two paths differ (forward is not
    forward_embedded(embed(x))) must be predicted on every checkpoint. Before: a step-0
    checkpoint with a zero head (every logit 0 on both paths) granted the reuse, and the
    later checkpoints were never predicted (1 train prediction instead of 3)."""
    from test_analyze_pipeline import PROTOCOL, _count_predictions, _report

    from alignctl.runs.checkpoints import write_checkpoint

    root = tmp_path / "run"
    root.mkdir()
    (root / "net.py").write_text(PROTOCOL)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 7, (50, 3), generator=g)
    y = x.sum(1) % 3
    np.savez(root / "data.npz", x_train=x[:30].numpy(), y_train=y[:30].numpy(),
             x_test=x[30:].numpy(), y_test=y[30:].numpy())  # fmt: skip
    (root / "alignctl.yaml").write_text("model: {factory: 'net.py:make'}\ndata: {path: data.npz}\n")
    for step in range(3):
        torch.manual_seed(step)
        state = {"emb.weight": torch.randn(7, 5), "head.weight": torch.randn(3, 15),
                 "head.bias": torch.randn(3)}  # fmt: skip
        if step == 0:
            state["head.weight"].zero_()  # logits = the bias for every sample, on both paths
        write_checkpoint(root / "checkpoints" / f"step_{step}.safetensors", state, {"step": step})
    rows = _count_predictions(monkeypatch)
    _report(root)
    assert rows.count(30) == 3
