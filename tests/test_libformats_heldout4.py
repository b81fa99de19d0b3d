"""Held-out: checkpoints as popular libraries save them (Hugging Face ``save_pretrained``,
torchvision's and timm's reference scripts, torch.export), analysed with a model built from
a config. Each is read right (the metrics equal those of the same model loaded with
``load_state_dict`` and measured with :func:`alignctl.measure`, exactly) or refused with one
error line saying what to do."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
import torch
import yaml
from test_outputs import one_error
from typer.testing import CliRunner

import alignctl
from alignctl.cli.assemble import app

pytest.importorskip("transformers")

MODELS = """
import torch
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel
from transformers import ViTConfig, ViTForImageClassification

class Gpt(GPT2LMHeadModel):  # next-token logits of the last position
    def forward(self, x):
        return super().forward(input_ids=x).logits[:, -1]

def gpt(tie=True):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=16, n_positions=8, n_embd=8, n_layer=1, n_head=2,
                     tie_word_embeddings=tie, bos_token_id=0, eos_token_id=0)
    return Gpt(cfg)

class Mlm(BertForMaskedLM):
    def forward(self, x):
        return super().forward(input_ids=x).logits[:, 0]

def bert(tie=True):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=8, tie_word_embeddings=tie)
    return Mlm(cfg)

class Vit(ViTForImageClassification):
    def forward(self, x):
        return super().forward(pixel_values=x).logits

def vit():
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=8,
                    num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                    num_labels=3)
    return Vit(cfg)
"""


def _factory(name):
    ns: dict = {}
    exec(MODELS, ns)
    return ns[name]


def _run(root, name, x, y):
    (root / "checkpoints").mkdir(parents=True)
    (root / "models.py").write_text(MODELS)
    np.savez(root / "d.npz", x_train=x, y_train=y)
    cfg = {"model": {"factory": f"models.py:{name}"}, "data": {"path": "d.npz"}}
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    return root / "checkpoints"


def _trained(make, seed, **kw):
    torch.manual_seed(seed)
    m = make(**kw)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m


def _analyze(path, *extra):
    args = ["analyze", str(path), "--json", "-", "--metrics", "full", "--no-cache"]
    return CliRunner().invoke(app, [*args, "--device", "cpu", *extra])


def _same_metrics(r, model, x, y):
    """The report's last checkpoint has exactly the metrics of ``model`` (float mean)."""
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)["checkpoints"][-1]["metrics"]
    want = alignctl.measure(model, torch.as_tensor(x), torch.as_tensor(y), device="cpu")
    for name, v in want.items():
        assert got[name] == float(v.double().mean()), name


def _tokens(n_classes=16):
    rng = np.random.default_rng(0)
    return rng.integers(0, 16, size=(6, 5)), np.arange(6) % n_classes


# ---- ties: a checkpoint of an untied model into a model that ties ---------------------------


@pytest.mark.parametrize("name", ["gpt", "bert"])
def test_untied_save_into_a_tied_model_is_refused_not_half_loaded(tmp_path, name):
    """Before: exit 0; the two stored tensors were copied into the one shared tensor, the last
    copied winning (GPT-2: wte became the saved lm_head), metrics of neither model."""
    x, y = _tokens()
    ckpts = _run(tmp_path, name, x, y)
    _trained(_factory(name), 5, tie=False).save_pretrained(ckpts / "checkpoint-10")
    line = one_error(_analyze(tmp_path))
    assert "different values for" in line and "tie_word_embeddings=False" in line, line


@pytest.mark.parametrize("name", ["gpt", "bert"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_tied_save_pretrained_in_any_dtype_gives_the_rounded_weights_metrics(tmp_path, name, dtype):
    x, y = _tokens()
    ckpts = _run(tmp_path, name, x, y)
    src = _trained(_factory(name), 5).to(dtype)
    src.save_pretrained(ckpts / "checkpoint-10", max_shard_size="2KB")
    model = _factory(name)()
    model.load_state_dict(src.state_dict())  # bf16/fp16-rounded, in float32
    _same_metrics(_analyze(tmp_path), model, x, y)


# ---- transformers >= 5 saves legacy names (ViT: vit.encoder.layer.N.attention.attention.*) ----


@pytest.mark.parametrize("shard", [None, "1KB"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_save_pretrained_legacy_names_load_into_the_renamed_modules(tmp_path, shard, dtype):
    """Before: exit 2, "missing keys vit.layers.0.attention.q_proj.weight ...; unexpected keys
    vit.encoder.layer.0.attention.output.dense.weight ...": the model's own save_pretrained
    output did not load (transformers 5 reverts its module renames on save)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3, 8, 8)).astype(np.float32), np.arange(6) % 3
    ckpts = _run(tmp_path, "vit", x, y)
    src = _trained(_factory("vit"), 5).to(dtype)
    kw = {"max_shard_size": shard} if shard else {}
    src.save_pretrained(ckpts / "checkpoint-4", **kw)
    files = json.dumps(sorted(p.name for p in (ckpts / "checkpoint-4").iterdir()))
    assert ("index.json" in files) == bool(shard)
    model = _factory("vit")()
    model.load_state_dict(src.state_dict())
    _same_metrics(_analyze(tmp_path), model, x, y)


def test_legacy_names_under_a_training_prefix_with_a_wrong_shape_still_name_the_culprit(
    tmp_path,
):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3, 8, 8)).astype(np.float32), np.arange(6) % 3
    ckpts = _run(tmp_path, "vit", x, y)
    src = _trained(_factory("vit"), 5)
    src.save_pretrained(tmp_path / "hf")
    sd = safetensors.torch.load_file(tmp_path / "hf" / "model.safetensors")
    torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 2},
               ckpts / "epoch=2.ckpt")  # fmt: skip
    model = _factory("vit")()
    model.load_state_dict(src.state_dict())
    _same_metrics(_analyze(tmp_path), model, x, y)
    key = "model.vit.encoder.layer.0.output.dense.weight"
    sd = {f"model.{k}": v for k, v in sd.items()}
    sd[key] = sd[key][:, :-1].contiguous()
    torch.save({"state_dict": sd, "epoch": 2}, ckpts / "epoch=2.ckpt")
    line = one_error(_analyze(tmp_path))
    assert "shape mismatch for model.vit.layers.0.mlp.fc2.weight" in line, line


# ---- PEFT adapters and torch.export archives: one error saying what to do ------------------


def _adapter(folder):
    folder.mkdir(parents=True)
    lora = "base_model.model.transformer.h.0.attn.c_attn.lora_"
    sd = {lora + "A.weight": torch.randn(4, 8), lora + "B.weight": torch.zeros(24, 4)}
    safetensors.torch.save_file(sd, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))


def test_peft_adapter_checkpoints_are_named_and_never_analysed_as_the_model(tmp_path):
    """Before: a folder of adapter-only checkpoint-N/ said "no checkpoint files ...: pass
    checkpoint-10 as the path" (which then failed on missing keys), and beside a full
    checkpoint the adapters vanished without a note."""
    x, y = _tokens()
    ckpts = _run(tmp_path, "gpt", x, y)
    _adapter(ckpts / "checkpoint-10")
    _adapter(ckpts / "checkpoint-20")
    line = one_error(_analyze(tmp_path))
    assert "checkpoint-10/ (a PEFT adapter" in line and "merge_and_unload" in line, line
    cfg = ["--config", str(tmp_path / "alignctl.yaml")]
    for path in (ckpts / "checkpoint-10", ckpts / "checkpoint-10" / "adapter_model.safetensors"):
        line = one_error(_analyze(path, *cfg))
        assert "a PEFT adapter" in line and "merge_and_unload" in line, line
    src = _trained(_factory("gpt"), 5)
    src.save_pretrained(ckpts / "checkpoint-30")
    r = _analyze(tmp_path)
    _same_metrics(r, src, x, y)
    (note,) = [n for n in json.loads(r.stdout)["notes"] if "PEFT adapter" in n]
    assert "checkpoint-10/" in note and "checkpoint-20/" in note


@pytest.mark.parametrize("name", ["exported.pt2", "exported.pt"])
def test_torch_export_archives_are_refused_as_programs(tmp_path, name):
    """Before: .pt said "corrupt or truncated torch file (... data.pkl: file not found)";
    .pt2 only listed the accepted suffixes."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3, 8, 8)).astype(np.float32), np.arange(6) % 3
    ckpts = _run(tmp_path, "vit", x, y)
    model = _factory("vit")().eval()
    torch.export.save(torch.export.export(model, (torch.as_tensor(x[:2]),)), ckpts / name)
    for path in (tmp_path, ckpts / name):
        line = one_error(_analyze(path))
        assert f"{name} is a torch.export archive" in line and "state_dict()" in line, line
