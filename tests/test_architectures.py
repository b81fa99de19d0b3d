"""Real architectures, built offline (issue 17 item 2): `alignctl analyze` from the CLI on
runs whose model is a ResNet-18, a ViT or a GPT-2, each built from a `transformers` config
(random init, no hub) through the factory mechanism, with two safetensors checkpoints each.

torchvision and timm have no build for the torch installed here (2.13.0), so torchvision's
``resnet18`` could not be used: transformers' ``ResNetForImageClassification`` with the
ResNet-18 shape (basic blocks, depths 2-2-2-2, widths 64-128-256-512, BatchNorm) stands in,
and ``ViTForImageClassification`` stands in for timm's / torchvision's ViT.

Checked: analyze exits 0 with finite metrics under ``--metrics fast`` and ``standard``;
BatchNorm is only ever run in eval mode and its running statistics are the checkpoint's
after analyze; the autograd memory of a chunk stays within ``--max-memory 64MiB``; a GPT-2
LM head's (n, seq, vocab) logits are refused on one line (a factory that returns the last
position's logits is the way); metric values equal a float64 per-sample
``torch.autograd.functional.jacobian`` reference on the ViT and the GPT-2 classifier.
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

pytest.importorskip("transformers")

from alignctl.cli.assemble import app  # noqa: E402
from alignctl.runs.checkpoints import write_checkpoint  # noqa: E402

FACTORIES = """
import torch
from torch import nn
import transformers as tf

ARCH_TEST_MODULE = True
BUILT = []      # every model the factories built (the test inspects them)
BN_MODES = []   # BatchNorm.training at each BatchNorm forward
BATCHES = []    # the batch size of each differentiated forward


def _track(model):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.register_forward_pre_hook(lambda mod, a: BN_MODES.append(mod.training))
    model.register_forward_pre_hook(
        lambda mod, a: BATCHES.append(a[0].shape[0]) if a and torch.is_grad_enabled() else None)
    BUILT.append(model)
    return model


def resnet18(num_labels=10):
    cfg = tf.ResNetConfig(num_channels=3, embedding_size=64, hidden_sizes=[64, 128, 256, 512],
                          depths=[2, 2, 2, 2], layer_type="basic", num_labels=num_labels)
    return _track(tf.ResNetForImageClassification(cfg))


def vit():
    cfg = tf.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       num_labels=10)
    return _track(tf.ViTForImageClassification(cfg))


def _gpt2(**kw):
    return tf.GPT2Config(vocab_size=96, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0, **kw)


def gpt2_classifier():
    return _track(tf.GPT2ForSequenceClassification(_gpt2(num_labels=5)))


def gpt2_lm():
    return _track(tf.GPT2LMHeadModel(_gpt2()))


class LastPosition(nn.Module):
    # The next-token logits of the last position: (n, vocab) classes.
    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, tokens):
        return self.lm(tokens).logits[:, -1]


def gpt2_lm_last():
    return _track(LastPosition(tf.GPT2LMHeadModel(_gpt2())))
"""


def _factories(root: Path):
    spec = importlib.util.spec_from_file_location(f"arch_{root.name}", root / "models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_run(root: Path, factory: str, x, n_classes: int, kwargs=None) -> Path:
    """models.py + data.npz + alignctl.yaml + 2 checkpoints (random BatchNorm statistics, the
    second with weights x0.9): a run folder as users write one."""
    root.mkdir(parents=True)
    (root / "models.py").write_text(FACTORIES)
    y = np.random.default_rng(0).integers(0, n_classes, len(x))
    np.savez(root / "data.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    model = {"factory": f"models.py:{factory}", "kwargs": kwargs or {}}
    cfg = {"model": model, "data": {"path": "data.npz"}}
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    (root / "checkpoints").mkdir()
    torch.manual_seed(1)
    sd = getattr(_factories(root), factory)(**(kwargs or {})).state_dict()
    for k, v in sd.items():  # BatchNorm statistics a train-mode forward would change
        if k.endswith("running_mean"):
            v.copy_(torch.randn_like(v) * 0.1)
        elif k.endswith("running_var"):
            v.copy_(torch.rand_like(v) + 0.5)
    for step, scale in enumerate((1.0, 0.9)):
        state = {k: v * scale if "running" not in k and v.is_floating_point() else v
                 for k, v in sd.items()}  # fmt: skip
        write_checkpoint(root / f"checkpoints/step_{step}.safetensors", state, {"step": step})
    return root


def analyze(root, *args):
    r = CliRunner().invoke(
        app, ["analyze", str(root), "--device", "cpu", "--no-cache", "--json", "-", *args]
    )
    return r, (json.loads(r.stdout) if r.exit_code == 0 else None)


def loaded_module():
    """The factory module as alignctl imported it (under its private name)."""
    mods = [m for m in list(sys.modules.values()) if getattr(m, "ARCH_TEST_MODULE", False)]
    return mods[-1]


def check_report(report, n_checkpoints=2):
    cks = report["checkpoints"]
    assert len(cks) == n_checkpoints
    for ck in cks:
        assert not ck["diverged"], ck["reason"]
        assert ck["metrics"] and all(np.isfinite(v) for v in ck["metrics"].values())


def images(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("metrics", ["fast", "standard"])
def test_resnet18_shape_ten_classes_batchnorm_in_eval(tmp_path, metrics):
    root = make_run(tmp_path / "r", "resnet18", images(6), 10, {"num_labels": 10})
    r, report = analyze(root, "--metrics", metrics, "--samples", "4", "--max-memory", "64MiB")
    assert r.exit_code == 0, r.stderr
    check_report(report)
    mod = loaded_module()
    assert mod.BN_MODES and not any(mod.BN_MODES)  # BatchNorm never ran in training mode
    from safetensors.torch import load_file

    last = load_file(root / "checkpoints/step_1.safetensors")
    for built in mod.BUILT:  # each model alignctl built holds a checkpoint's statistics
        stats = {k: v for k, v in built.state_dict().items() if "running" in k or "batches" in k}
        assert stats
        if built is mod.BUILT[-1]:
            for k, v in stats.items():
                assert torch.equal(v, last[k]), k


def test_resnet18_shape_thousand_classes(tmp_path):
    root = make_run(tmp_path / "r", "resnet18", images(3), 1000, {"num_labels": 1000})
    r, report = analyze(root, "--metrics", "standard", "--max-memory", "64MiB")
    assert r.exit_code == 0, r.stderr
    check_report(report)


@pytest.mark.parametrize("budget", [8, 64])
def test_the_memory_budget_bounds_what_autograd_keeps(tmp_path, budget):
    """The activations autograd holds for backward (distinct storages other than the model's
    weights, live, counted with saved_tensors_hooks) stay within ``--max-memory`` at their
    peak during analyze; the chunks shrink when the budget does."""
    root = make_run(tmp_path / "r", "resnet18", images(8), 10, {"num_labels": 10})
    live, state = {}, {"peak": 0}

    def weights():
        model = loaded_module().BUILT[-1]
        return {t.untyped_storage().data_ptr() for t in model.state_dict().values()}

    class Held:
        def __init__(self, t):
            self.t, self.key = t, t.untyped_storage().data_ptr()
            if self.key in weights():
                self.key = None
                return
            n, count = live.get(self.key, (t.untyped_storage().nbytes(), 0))
            live[self.key] = (n, count + 1)
            state["peak"] = max(state["peak"], sum(v[0] for v in live.values()))

        def __del__(self):
            if self.key is not None:
                n, count = live.pop(self.key)
                if count > 1:
                    live[self.key] = (n, count - 1)

    with torch.autograd.graph.saved_tensors_hooks(Held, lambda h: h.t):
        r, report = analyze(root, "--metrics", "standard", "--max-memory", f"{budget}MiB")
    assert r.exit_code == 0, r.stderr
    check_report(report)
    chunks = loaded_module().BATCHES
    assert 0 < state["peak"] <= budget * 2**20, (state["peak"] / 2**20, chunks)
    if budget == 8:
        assert max(chunks) < 8, chunks


@pytest.mark.parametrize("metrics", ["fast", "standard"])
def test_vit_matches_the_float64_reference(tmp_path, metrics):
    from test_models_real import reference

    x = images(5, seed=3)
    root = make_run(tmp_path / "r", "vit", x, 10)
    r, report = analyze(root, "--metrics", metrics, "--max-memory", "64MiB")
    assert r.exit_code == 0, r.stderr
    check_report(report)
    y = np.random.default_rng(0).integers(0, 10, len(x))
    net = _factories(root).vit()
    from safetensors.torch import load_file

    for step, ck in enumerate(report["checkpoints"]):
        net.load_state_dict(load_file(root / f"checkpoints/step_{step}.safetensors"))
        ref = reference(_Logits(net), torch.from_numpy(x).double(), torch.from_numpy(y))
        assert_matches(ck["metrics"], ref)


def assert_matches(metrics, ref):
    compared = [name for name in metrics if name in ref]
    assert len(compared) >= 3, (sorted(metrics), sorted(ref))
    for name in compared:
        want = float(np.mean(ref[name]))
        assert metrics[name] == pytest.approx(want, rel=2e-4, abs=1e-5), name


class _Logits(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x).logits


def tokens(n, length=8, vocab=96, seed=0):
    # Never the pad token 0: the classifier reads the last non-pad position.
    return np.random.default_rng(seed).integers(1, vocab, size=(n, length)).astype(np.int64)


@pytest.mark.parametrize("metrics", ["fast", "standard"])
def test_gpt2_classifier_matches_the_float64_reference(tmp_path, metrics):
    from test_geometry import brute_force

    x = tokens(6)
    root = make_run(tmp_path / "r", "gpt2_classifier", x, 5)
    r, report = analyze(root, "--metrics", metrics, "--max-memory", "64MiB")
    assert r.exit_code == 0, r.stderr
    check_report(report)
    y = np.random.default_rng(0).integers(0, 5, len(x))
    net = _factories(root).gpt2_classifier()
    from safetensors.torch import load_file

    net.load_state_dict(load_file(root / "checkpoints/step_1.safetensors"))
    net = net.double().eval()
    t = torch.from_numpy(x)

    class AtEmbedding(torch.nn.Module):  # the Jacobian at the token embedding's output
        def forward(self, e):
            return net(inputs_embeds=e, attention_mask=torch.ones(e.shape[:2])).logits

    ref = brute_force(AtEmbedding(), net.transformer.wte(t).detach(), torch.from_numpy(y))
    assert_matches(report["checkpoints"][1]["metrics"], ref)


def test_gpt2_lm_head_sequence_logits_are_one_line_and_last_position_works(tmp_path):
    x = tokens(4)
    root = make_run(tmp_path / "r", "gpt2_lm", x, 96)
    r, _ = analyze(root, "--metrics", "fast")
    assert r.exit_code == 2, r.stdout
    err = r.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    # the caller's 4 sequences of 8 tokens, each given (8, 96) logits: not the 1-sample probe
    assert "(8, 96) per sample for the 4 input samples of shape (8,)" in err, err
    assert "position" in err and "(1, 8, 96)" not in err, err

    root = make_run(tmp_path / "last", "gpt2_lm_last", x, 96)
    r, report = analyze(root, "--metrics", "standard", "--max-memory", "64MiB")
    assert r.exit_code == 0, r.stderr
    check_report(report)
