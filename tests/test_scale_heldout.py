"""Held-out inputs for issue 17 (qa16): models and options the sketch, budget and torchrun
tests were not built on. Each passed when written; they guard the behaviour, not a fix."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import alignctl


def test_a_conv_net_with_512_classes_is_within_its_reported_errors():
    """A CNN with C = 512 (flat random spectrum: estimates, not captured) against float64 exact:
    every sample's true error within its reported 95% error."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                        nn.Flatten(), nn.Linear(64, 512))  # fmt: skip
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 512, (6,))
    exact = alignctl.measure(net.double(), x.double(), y, metrics="standard", sketch=0)
    errors: dict = {}
    est = alignctl.measure(net.float(), x, y, metrics="standard", sketch=16, errors=errors)
    assert {"jacobian_norm", "jacobian_pc1"} <= set(errors)
    for name, err in errors.items():
        true = (est[name].double() - exact[name].double()).abs()
        assert (true <= err.double() + 1e-6 * exact[name].double().abs()).all(), name


def test_a_tiny_vit_with_300_classes_is_the_same_under_a_1mib_budget():
    """transformers' ViT (random init, no hub), sketched: a 1 MiB budget (chunks of one
    sample, products one at a time) gives the values of the default budget."""
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tf.ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=16,
                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       num_labels=300)  # fmt: skip
    net = tf.ViTForImageClassification(cfg).eval()
    x, y = torch.randn(3, 3, 8, 8), torch.randint(0, 300, (3,))
    a = alignctl.measure(net, x, y, metrics="standard")
    b = alignctl.measure(net, x, y, metrics="standard", max_memory="1MiB")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-7)


def test_one_checkpoint_over_three_ranks_with_robustness_and_samples(tmp_path):
    """One checkpoint (its samples dealt) over 3 gloo ranks with --robustness (PGD on rank 0)
    and --metrics full: the report of one process."""
    from test_distributed import alignctl as run_alignctl
    from test_distributed import assert_close, make_run, silent, without_timing

    run = make_run(tmp_path / "run", n_checkpoints=1)
    args = ["analyze", run, "--json", "-", "--threads", "1", "--keep-samples", "--robustness",
            "--metrics", "full"]  # fmt: skip
    one, three = run_alignctl(args, 1, tmp_path), run_alignctl(args, 3, tmp_path)
    assert one.returncode == three.returncode == 0 and silent(three), three.stderr
    a, b = without_timing(json.loads(one.stdout)), without_timing(json.loads(three.stdout))
    assert_close(a, b)
