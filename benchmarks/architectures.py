"""Real architectures at real input sizes (issue 17, item 2): time and memory per sample.

    nice -n 10 python benchmarks/architectures.py [--samples 2] [--budget 512MiB] [--threads 1]

Models from ``transformers`` configs, random init, nothing downloaded (torchvision and timm
have no build for the torch this project pins, so its ResNet-18 is transformers'
``ResNetForImageClassification`` with the ResNet-18 shape: basic blocks, depths 2-2-2-2,
widths 64-128-256-512, BatchNorm):

  ResNet-18 shape, C = 10 and 1000, inputs 3x32x32 and 3x224x224;
  ViT-B/16 shape (12 layers, width 768, patches 16x16), 3x224x224, C = 1000;
  GPT-2 small shape (12 layers, width 768, vocabulary 50257) as a sequence classifier with
  C = 2 and as a language model's next-token logits (C = 50257), 64 tokens.

For each: ``alignctl.measure`` with the ``fast`` (centroid) and ``standard`` metric sets under
the ``--budget`` memory budget (the default ``max_memory``), CPU seconds per sample (this
thread) and the peak resident memory over the process's resident memory before the call
(sampled every 2 ms; includes the model's activations and the products' buffers). Above 256
classes the whole-Jacobian metrics are sketched (K = 16, ``alignctl.geometry.sketch``).
"""

from __future__ import annotations

import argparse
import threading
import time

import torch
from torch import nn

import alignctl
from alignctl.report.analysis import resolve_metrics

FAST = ["centroid_alignment", "centroid_inner", "centroid_norm"]


def resnet18(c: int) -> nn.Module:
    import transformers as tf

    cfg = tf.ResNetConfig(num_channels=3, embedding_size=64, hidden_sizes=[64, 128, 256, 512],
                          depths=[2, 2, 2, 2], layer_type="basic", num_labels=c)  # fmt: skip
    return tf.ResNetForImageClassification(cfg)


def vit_b16(c: int) -> nn.Module:
    import transformers as tf

    return tf.ViTForImageClassification(tf.ViTConfig(image_size=224, patch_size=16, num_labels=c))


class NextToken(nn.Module):
    """A language model's next-token logits at the last position: (n, vocabulary) classes."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, tokens):
        return self.lm(tokens).logits[:, -1]


def gpt2(c: int | None) -> nn.Module:
    import transformers as tf

    cfg = tf.GPT2Config(pad_token_id=0, num_labels=c or 2)
    if c is None:
        return NextToken(tf.GPT2LMHeadModel(cfg))
    return tf.GPT2ForSequenceClassification(cfg)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def timed(fn) -> tuple[float, int]:
    """(CPU seconds of this thread, peak RSS growth in bytes) of fn()."""
    base, top, done = rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            top[0] = max(top[0], rss() - base)
            time.sleep(0.002)

    t = threading.Thread(target=sample)
    t.start()
    t0 = time.thread_time()
    try:
        fn()
    finally:
        spent = time.thread_time() - t0
        done.set()
        t.join()
    return spent, top[0]


def cases(n: int):
    g = torch.Generator().manual_seed(0)
    for c in (10, 1000):
        for side in (32, 224):
            yield f"ResNet-18 shape, C={c}, 3x{side}x{side}", lambda c=c: resnet18(c), \
                torch.randn(n, 3, side, side, generator=g)  # fmt: skip
    yield "ViT-B/16 shape, C=1000, 3x224x224", lambda: vit_b16(1000), \
        torch.randn(n, 3, 224, 224, generator=g)  # fmt: skip
    tokens = torch.randint(1, 50257, (n, 64), generator=g)
    yield "GPT-2 small shape, classifier C=2, 64 tokens", lambda: gpt2(2), tokens
    yield "GPT-2 small shape, next token C=50257, 64 tokens", lambda: gpt2(None), tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--budget", default="512MiB")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="", help="run the cases whose name contains this")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s), {a.samples} samples, "
          f"max_memory {a.budget}")  # fmt: skip
    for name, make, x in cases(a.samples):
        if a.only not in name:
            continue
        torch.manual_seed(0)
        model = make().eval()
        params = sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            out = model(x[:1])
        c = (out if isinstance(out, torch.Tensor) else out.logits).shape[-1]
        y = torch.randint(0, c, (len(x),), generator=torch.Generator().manual_seed(1))
        line = f"{name} ({params / 1e6:.1f}M parameters):"
        for label, metrics in (("fast", FAST), ("standard", "standard")):
            names = resolve_metrics(metrics) if isinstance(metrics, str) else metrics
            notes: list = []

            def run(model=model, x=x, y=y, names=names, notes=notes):
                alignctl.measure(model, x, y, metrics=names, max_memory=a.budget, notes=notes)

            spent, peak = timed(run)
            sketched = " (sketched)" if any("random probes" in s for s in notes) else ""
            line += f" {label} {spent / len(x):.2f} s/sample, +{peak / 2**20:.0f} MiB{sketched};"
        print(line, flush=True)


if __name__ == "__main__":
    main()
