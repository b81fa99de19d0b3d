"""Held-out users' inputs of issue 11, second round (qa11): models, checkpoints and data as
real training code makes them, against the float64 brute-force reference of tests/test_geometry.py.

Defects this file pins: models whose samples interact in eval mode gave numbers that changed
with the chunk size (now refused); checkpoints without batch norms' ``num_batches_tracked``,
or with FSDP / activation-checkpointing wrapper names in their keys, were refused; a step
stored as a numpy scalar was lost (the checkpoint got an invented step); a state dict of
numpy arrays was called "a dict without tensors"; a frozen backbone under ``torch.no_grad()``
was blamed on integer inputs."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
import yaml
from test_geometry import brute_force
from test_outputs import one_error
from torch import nn
from typer.testing import CliRunner

import alignctl
from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.geometry.independence import RANDOM

ALL = [m for m in alignctl.METRICS.names() if not alignctl.METRICS.get(m).opt_in]


# ---- models: every metric, default and full sets, against the reference -------------------


class SharedResidual(nn.Module):
    """One block applied twice with a skip, a weight reused transposed."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.blk = nn.Sequential(nn.Linear(6, 6), nn.GELU())
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        h = h + self.blk(self.blk(h))
        return self.head(F.linear(h, self.fc.weight.t()))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.att = nn.MultiheadAttention(4, 2, batch_first=True)
        self.norm = nn.RMSNorm(4)
        self.head = nn.Linear(4, 3)
        self.register_buffer("mask", torch.triu(torch.ones(5, 5, dtype=torch.bool), 1))

    def forward(self, x):
        h, _ = self.att(x, x, x, attn_mask=self.mask)
        return self.head(self.norm(h)[:, -1])


def _conv():
    m = nn.Sequential(
        nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4), nn.GroupNorm(2, 4), nn.SiLU(),
        nn.ConvTranspose2d(4, 2, 2, stride=2), nn.Hardswish(), nn.LPPool2d(2, 4),
        nn.Flatten(), nn.Linear(32, 3),
    )  # fmt: skip
    m[1].weight.data.uniform_(0.5, 1.5)
    return m


def _parametrized():
    from torch.nn.utils.parametrizations import orthogonal, weight_norm

    m = nn.Sequential(nn.Linear(6, 6), nn.Softplus(), nn.Linear(6, 3))
    weight_norm(m[0])
    orthogonal(m[2])
    return m


CASES = {
    "shared_residual_transposed": (SharedResidual, lambda g: torch.randn(6, 6, generator=g)),
    "attention_masked_rmsnorm": (Attention, lambda g: torch.randn(6, 5, 4, generator=g)),
    "grouped_dilated_transposed_conv": (
        _conv,
        lambda g: torch.randn(6, 4, 8, 8, generator=g).to(memory_format=torch.channels_last),
    ),
    "parametrized_first_layer_expanded_x": (
        _parametrized, lambda g: torch.randn(1, 6, generator=g).expand(6, 6),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_models_as_users_write_them_match_the_float64_reference(case):
    make, data = CASES[case]
    torch.manual_seed(0)
    model = make()
    x, y = data(torch.Generator().manual_seed(1)), torch.arange(6) % 3
    ref = brute_force(copy.deepcopy(model), x, y)  # float64 on a copy: the model stays
    for metrics, dtype, tol in ((None, None, 1e-3), ("full", None, 1e-3),
                                ("full", torch.float64, 1e-9)):  # fmt: skip
        got = alignctl.measure(model, x, y, metrics=metrics, device="cpu", dtype=dtype)
        for name in ALL:  # float32: the attention's own float32 jacrev is 3.3e-4 off too
            np.testing.assert_allclose(got[name].numpy(), ref[name], rtol=tol, atol=tol / 10,
                                       err_msg=f"{case} {name} {dtype}")  # fmt: skip


# ---- samples that interact: refused, never measured --------------------------------------


class BatchCentred(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.fc(x)
        return self.head(torch.tanh(h - h.mean(0, keepdim=True)))


class AlwaysBatchStats(BatchCentred):
    def forward(self, x):
        return self.head(torch.relu(F.batch_norm(self.fc(x), None, None, training=True)))


class BatchSizeBranch(BatchCentred):
    def forward(self, x):
        return self.head(torch.tanh(self.fc(x) * (2.0 if x.shape[0] > 3 else 1.0)))


@pytest.mark.parametrize("make", [BatchCentred, AlwaysBatchStats, BatchSizeBranch])
@pytest.mark.parametrize("metrics", ["fast", "standard"])
def test_models_whose_samples_interact_are_refused(make, metrics):
    """Before: centroid_alignment of sample 0 was 0.379 / -0.116 / 0.261 for chunks of
    20 / 4 / 10 samples of BatchCentred (the per-sample Jacobian is not defined)."""
    torch.manual_seed(0)
    model, x = make(), torch.randn(20, 6)
    for batch_size in (None, 4):
        with pytest.raises(InputError, match="depend on the other samples of its batch"):
            alignctl.measure(model, x, torch.arange(20) % 3, metrics=metrics,
                             batch_size=batch_size, device="cpu")  # fmt: skip


class Noisy(BatchCentred):
    def forward(self, x):
        return self.head(torch.tanh(self.fc(x) + 0.1 * torch.randn(x.shape[0], 8)))


def test_random_draws_in_eval_are_noted_not_refused():
    torch.manual_seed(0)
    notes: list[str] = []
    alignctl.measure(Noisy(), torch.randn(10, 6), metrics="fast", device="cpu", notes=notes)
    assert RANDOM in notes
    notes.clear()
    bn = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    alignctl.measure(bn, torch.randn(10, 6), metrics="fast", device="cpu", notes=notes)
    assert notes == []  # batch norm in eval mode: per sample


def test_a_frozen_backbone_under_no_grad_is_named_not_blamed_on_integers():
    class Probe(BatchCentred):
        def forward(self, x):
            with torch.no_grad():
                h = torch.relu(self.fc(x))
            return self.head(h)

    with pytest.raises(InputError, match=r"torch\.no_grad\(\)") as e:
        alignctl.measure(Probe(), torch.randn(5, 6), metrics="fast", device="cpu")
    assert str(e.value).index("no_grad") < str(e.value).index("integer")


# ---- checkpoints as training code writes them ----------------------------------------------

MODELS = """
import torch, torch.nn as nn
def bn():
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
"""


def _bn_model():
    ns: dict = {}
    exec(MODELS, ns)
    torch.manual_seed(1)
    m = ns["bn"]()
    with torch.no_grad():
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
    return m


def _run(root, write) -> tuple:
    root.mkdir()
    (root / "models.py").write_text(MODELS)
    x = np.random.default_rng(0).normal(size=(12, 6)).astype(np.float32)
    y = np.arange(12) % 3
    np.savez(root / "d.npz", x_train=x, y_train=y)
    cfg = {"model": {"factory": "models.py:bn"}, "data": {"path": "d.npz"}}
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    (root / "checkpoints").mkdir()
    model = _bn_model()
    write(root / "checkpoints", model)
    want = alignctl.measure(model, torch.tensor(x), torch.tensor(y), metrics="fast", device="cpu")
    return root, {k: float(v.mean()) for k, v in want.items()}


def _analyze(root):
    return CliRunner().invoke(app, ["analyze", str(root), "--json", "-", "--metrics", "fast",
                                    "--no-cache", "--device", "cpu"])  # fmt: skip


def _sd(model, rename=lambda k: k, drop=()):
    return {rename(k): v for k, v in model.state_dict().items() if not k.endswith(drop)}


def _fsdp(k):
    head, rest = k.split(".", 1)
    return f"_fsdp_wrapped_module.{head}._fsdp_wrapped_module._checkpoint_wrapped_module.{rest}"


WRITERS = {
    # PyTorch < 0.4.1 and converted checkpoints have no num_batches_tracked
    "pt_without_num_batches_tracked": lambda d, m: torch.save(
        _sd(m, drop=("num_batches_tracked",)), d / "step_3.pt"
    ),
    "safetensors_without_num_batches_tracked": lambda d, m: safetensors.torch.save_file(
        _sd(m, drop=("num_batches_tracked",)), d / "step_3.safetensors"
    ),
    # FSDP (use_orig_params, saved through model.module) and checkpoint_wrapper names
    "fsdp_and_checkpoint_wrapper_keys": lambda d, m: torch.save(
        {"model": _sd(m, _fsdp), "step": 3}, d / "last.pt"
    ),
    "ddp_inside_fsdp_safetensors": lambda d, m: safetensors.torch.save_file(
        _sd(m, lambda k: "module." + _fsdp(k)), d / "step_3.safetensors"
    ),
    # a loop whose counter is a numpy integer (np.arange epochs, np.int64 sums)
    "numpy_scalar_step": lambda d, m: torch.save(
        {"model": m.state_dict(), "iter_num": np.int64(3), "best": np.float32(0.5)},
        d / "ckpt.pt",
    ),
}


@pytest.mark.parametrize("case", sorted(WRITERS))
def test_checkpoints_from_real_loops_load_the_right_weights(tmp_path, case):
    root, want = _run(tmp_path / "r", WRITERS[case])
    r = _analyze(root)
    assert r.exit_code == 0, r.stderr
    (ck,) = json.loads(r.stdout)["checkpoints"]
    assert ck["step"] == 3
    for name, value in want.items():
        assert ck["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name


def test_a_custom_buffer_named_num_batches_tracked_is_still_required(tmp_path):
    from alignctl.runs.checkpoints.loading import load_weights

    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.register_buffer("num_batches_tracked", torch.tensor(0))

    with pytest.raises(InputError, match="missing keys num_batches_tracked"):
        load_weights(Counter(), _sd(Counter(), drop=("num_batches_tracked",)), "c.pt")


def test_a_state_dict_of_numpy_arrays_is_named(tmp_path):
    def write(d, m):
        sd = {k: v.numpy() for k, v in m.state_dict().items()}
        torch.save(sd, d / "step_1.pt")

    root, _ = _run(tmp_path / "r", write)
    one_error(_analyze(root), "a dict of numpy arrays", "'0.weight'", "torch.from_numpy")


# ---- a factory that wraps the model the checkpoint was saved from --------------------------

WRAPPED = """
import torch, torch.nn as nn
from transformers import BertConfig, BertForSequenceClassification

class Logits(nn.Module):  # what the README asks of a factory: return the logits tensor
    def __init__(self):
        super().__init__()
        cfg = BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=16,
                         max_position_embeddings=8, num_labels=3)
        self.m = BertForSequenceClassification(cfg)

    def forward(self, x):
        return self.m(input_ids=x).logits

def bert():
    return Logits()
"""


def test_a_factory_wrapping_a_saved_hugging_face_model_loads_it(tmp_path):
    """Before: "missing keys m.bert.embeddings...; unexpected keys bert.embeddings..." for a
    save_pretrained folder of the model the factory wraps."""
    pytest.importorskip("transformers")
    root = tmp_path / "r"
    (root / "checkpoints").mkdir(parents=True)
    (root / "models.py").write_text(WRAPPED)
    tokens, y = np.random.default_rng(0).integers(1, 40, size=(6, 5)), np.arange(6) % 3
    np.savez(root / "d.npz", x_train=tokens, y_train=y)
    cfg = {"model": {"factory": "models.py:bert"}, "data": {"path": "d.npz"}}
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    ns: dict = {}
    exec(WRAPPED, ns)
    torch.manual_seed(3)
    model = ns["bert"]()
    model.m.save_pretrained(root / "checkpoints" / "checkpoint-10")
    r = _analyze(root)
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert any("submodule 'm'" in n for n in report["notes"])
    want = alignctl.measure(model, torch.tensor(tokens), torch.tensor(y), metrics="fast",
                            device="cpu")  # fmt: skip
    for name, value in want.items():
        got = report["checkpoints"][0]["metrics"][name]
        assert got == pytest.approx(float(value.mean()), rel=1e-5, abs=1e-7), name


class Wrapper(nn.Module):
    def __init__(self, extra: bool = False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 3))
        if extra:
            self.scale = nn.Parameter(torch.ones(()))


def test_the_wrapped_submodule_under_a_checkpoint_prefix_and_nothing_looser():
    from alignctl.runs.checkpoints.loading import choose_weights, load_weights

    inner = Wrapper().net
    torch.nn.init.normal_(inner[0].weight)
    lightning = {"model." + k: v for k, v in inner.state_dict().items()}
    lightning["criterion.weight"] = torch.ones(3)
    model = Wrapper()
    notes = load_weights(model, lightning, "c.ckpt")
    assert torch.equal(model.net[0].weight, inner[0].weight)
    assert any("submodule 'net'" in n for n in notes)
    # the wrapper's own parameter is in no checkpoint: refused, never left at its init
    with pytest.raises(InputError, match=r"missing keys under prefix 'model\.' scale;"):
        load_weights(Wrapper(extra=True), lightning, "c.ckpt")
    # saved from the wrapper itself: one fit, chosen from shapes alone (streamed loading)
    meta = {k: v.to("meta") for k, v in Wrapper().state_dict().items()}
    fit, notes = choose_weights(Wrapper(), meta, "c.safetensors")
    assert (fit.prefix, fit.into, notes) == ("", "", [])
