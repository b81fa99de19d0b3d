"""Device selection and numerics settings shared by measuring and training."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

from alignctl.errors import InputError, short

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (and None) picks CUDA when present, then MPS, else the CPU.

    Asking for an accelerator that is not there is an input error, not a silent fallback.
    """
    if isinstance(device, torch.device):
        return device
    if device is not None and not isinstance(device, str):  # [] is not "auto", 3 not a name
        raise InputError(f"device must be a name ({', '.join(DEVICE_CHOICES)}) or a "
                         f"torch.device, not {type(device).__name__}")  # fmt: skip
    name = (device or "auto").lower()
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    kind = name.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(
            'device cuda was asked for (--device cuda, device="cuda"), but CUDA '
            "is not available on this machine"
        )
    if kind == "mps" and not has_mps:
        raise InputError(
            'device mps was asked for (--device mps, device="mps"), but MPS '
            "is not available on this machine"
        )
    if kind not in DEVICE_CHOICES[1:]:
        raise InputError(f"unknown device {short(device)}; valid: {', '.join(DEVICE_CHOICES)}")
    return torch.device(name)


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Turn TF32 off for the duration, so GPU float32 values match CPU float32 values.

    TF32 rounds matmul inputs to 10 mantissa bits: fine for training, wrong for measuring.
    """
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved[0]
        torch.backends.cudnn.allow_tf32 = saved[1]
        torch.set_float32_matmul_precision(saved[2])


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Evaluate in eval mode (dropout off, batch-norm running statistics), then restore
    each submodule's own mode: per-sample quantities must not depend on the batch."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def twice_differentiable() -> contextlib.AbstractContextManager:
    """Attention through ``scaled_dot_product_attention``'s math kernel for the duration, so
    that its backward can itself be differentiated.

    The fused CPU and CUDA kernels (flash, memory-efficient, cuDNN) have no double backward:
    a JVP by the double-VJP trick (the sketch, :mod:`alignctl.geometry.products`) or a
    penalty on input gradients (GrokAlign) would fail on every transformer with "derivative
    for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented". The
    math kernel computes the same attention (``torch.nn.attention.sdpa_kernel``)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # a torch without the selector has no fused kernels to avoid
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


# What torch says when a model's forward meets a tensor on another device: a tensor created
# without ``device=`` (``torch.arange(n)`` in forward), a module held outside the model's
# submodules (a closure, a plain attribute), a buffer kept as a plain tensor attribute.
_MISMATCH = (
    "expected all tensors to be on the same device",
    "expected object of device type",
    "on the same device as the indexed tensor",
    "found at least two devices",
    "is not on the expected device",
)
# "Input type (torch.cuda.FloatTensor) and weight type (torch.FloatTensor) should be the same"
# is a device mismatch only when one type is a CUDA type and the other is not (else: dtype)
_TYPES = re.compile(r"input type \((\S+)\) and weight type \((\S+)\) should be the same")


def is_device_mismatch(e: BaseException) -> bool:
    """Whether ``e`` is torch's error for tensors on different devices in one operation."""
    if not isinstance(e, RuntimeError):
        return False
    text = str(e).lower()
    types = _TYPES.search(text)
    if types:
        return ("cuda" in types.group(1)) != ("cuda" in types.group(2))
    return any(m in text for m in _MISMATCH)


def outside_inference(x: torch.Tensor) -> torch.Tensor:
    """x, copied when it was made under ``torch.inference_mode`` (such a tensor can never enter
    autograd); the products themselves run with inference mode off, so measure() works inside
    a caller's ``torch.inference_mode()`` block (a monitor in a validation loop)."""
    if not x.is_inference():
        return x
    with torch.inference_mode(False):
        return x.clone()
