"""Where a measurement runs: a copy of the model on the device and in the dtype asked for (the
caller's model is never changed)."""

from __future__ import annotations

import copy

import torch

from alignctl.geometry.devices import resolve_device
from alignctl.geometry.inputs import unwrap

__all__ = ["copy_model", "prepare"]

HALF = (torch.float16, torch.bfloat16)


def prepare(model, device, dtype) -> tuple[torch.nn.Module, torch.device, torch.dtype]:
    """Move a copy of the model when the device or dtype differs (the caller's model is
    never changed). Without ``dtype``, a float16/bfloat16 model is measured as a float32 copy:
    half precision keeps 3-4 significant digits, and the CPU has no half QR/SVD at all."""
    model = unwrap(model)
    dev = resolve_device(device)
    p = next(iter(model.parameters()), None)
    cur_dev = p.device if p is not None else torch.device("cpu")
    cur_dtype = p.dtype if p is not None and p.is_floating_point() else torch.get_default_dtype()
    want = dtype or (torch.float32 if cur_dtype in HALF else cur_dtype)
    if cur_dev.type != dev.type or want != cur_dtype:
        model = copy_model(model).to(device=dev, dtype=want)
    return model, dev, want


def copy_model(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy. Modules that keep a computed tensor as a plain attribute (``spectral_norm``
    and old-style ``weight_norm`` keep ``weight``, recomputed by a pre-hook at every call)
    cannot be deep-copied after a forward pass with gradients; such attributes are detached
    first (same values: the hook recomputes them)."""
    try:
        return copy.deepcopy(model)
    except RuntimeError:
        for m in model.modules():
            for k, v in list(vars(m).items()):
                if isinstance(v, torch.Tensor) and not v.is_leaf:
                    setattr(m, k, v.detach())
        return copy.deepcopy(model)
