"""Host-to-device copies of batches: pinned memory and ``non_blocking`` on CUDA, the plain
``Tensor.to`` everywhere else.

A copy from ordinary (pageable) host memory to a CUDA device synchronises: CUDA first waits
for the stream to drain, then stages the data through a pinned buffer, so the host cannot
queue the next kernels while the GPU copies (and a training step that moves its index batch
stalls once per step). From pinned (page-locked) memory, ``.to(device, non_blocking=True)``
queues the copy on the current stream and returns at once; the kernels that read the copy are
queued behind it on the same stream, so they see it complete. The pinned source stays valid
until the copy ends: torch's caching host allocator does not reuse a pinned block before the
copies recorded on it finish. Only host -> CUDA: a non-blocking copy to the host could be read
before it lands. On the CPU (and MPS) :func:`to_device` is exactly the ``Tensor.to`` call it
replaces, byte for byte, with the same aliasing (no copy unless asked or needed).

Measured: not yet (no GPU in this project's sessions; README, Performance).
"""

from __future__ import annotations

import torch


def pins(device, cuda_available: bool | None = None) -> bool:
    """Whether a host tensor goes to ``device`` through pinned memory, non-blocking: iff the
    target is a CUDA device and CUDA is available (``cuda_available``: the default asks
    torch)."""
    if torch.device(device).type != "cuda":
        return False
    return torch.cuda.is_available() if cuda_available is None else bool(cuda_available)


def to_device(x: torch.Tensor, device, dtype: torch.dtype | None = None, *,
              copy: bool = False) -> torch.Tensor:  # fmt: skip
    """``x`` on ``device`` (in ``dtype``): ``x.to(device=device, dtype=dtype, copy=copy)``,
    unless x is on the CPU and :func:`pins` says CUDA: then a pinned copy (x itself if it is
    pinned already) goes over with ``non_blocking=True`` and is cast on the device. The result
    is always a new tensor there, so ``copy`` holds."""
    if x.device.type == "cpu" and pins(device):
        src = x if x.is_pinned() else x.pin_memory()
        out = src.to(device=device, non_blocking=True)
        return out if dtype is None else out.to(dtype)
    if dtype is None:
        return x.to(device=device, copy=copy)
    return x.to(device=device, dtype=dtype, copy=copy)
