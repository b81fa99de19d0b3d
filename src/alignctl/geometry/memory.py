"""Batch sizes from a memory budget: how many samples one chunk may hold.

A chunk's working memory is estimated per sample from a probe, whatever the metric set:

    bytes/sample = 2 A + 3 I + J

- A: the activations autograd keeps for the backward pass, measured with
  ``torch.autograd.graph.saved_tensors_hooks`` on probes of 1 and 2 samples (the difference,
  so the weights that are saved once do not count); doubled for the gradients of the same
  size that a backward pass creates while it runs;
- I: the input (the copy the model may modify, the differentiated tensor, its gradient);
- J: what the metrics keep: C x d Jacobian rows, stacked once (2 C d) for the whole-Jacobian
  metrics; the centroid and the label row (2 d) otherwise.

The chunk is ``budget // bytes_per_sample`` samples (1 at least, 1024 at most). The default
budget (:func:`default_budget`) is :data:`DEFAULT_MAX_MEMORY` (512 MiB) on the CPU and MPS,
and half the free memory of the device on CUDA (``torch.cuda.mem_get_info``: a GPU's
memory is there to be used, and other processes' share is already taken out of "free");
``max_memory=`` / ``--max-memory`` set it explicitly.
The model, its weights and the data set itself come on top of the budget.
"""

from __future__ import annotations

import re

import torch

from alignctl.errors import InputError, short

DEFAULT_MAX_MEMORY = 512 * 2**20
MAX_CHUNK = 1024
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def default_budget(device=None) -> int:
    """Bytes one chunk may use when no budget is given (module docstring)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(dev)
        return max(1, int(free) // 2)
    return DEFAULT_MAX_MEMORY


def budget(max_memory, device=None) -> int:
    """``max_memory`` parsed (:func:`parse_bytes`), else :func:`default_budget` of ``device``."""
    return parse_bytes(max_memory) if max_memory is not None else default_budget(device)


def parse_bytes(value) -> int:
    """``512MiB``, ``2G``, ``1.5GB``, ``100k`` or a number of bytes -> bytes (binary units)."""
    if isinstance(value, bool):
        raise InputError(f"memory budget must be a size such as 512MiB, not {short(value)}")
    if isinstance(value, (int, float)):
        n = value
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(value), re.IGNORECASE)
        if not m:
            raise InputError(f"memory budget must be a size such as 512MiB, not {short(value)}")
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not n == n or n < 2**20 or n > 2**50:  # NaN, or outside 1 MiB .. 1 PiB
        raise InputError(f"memory budget must be between 1MiB and 1PiB, not {short(value)}")
    return int(n)


def saved_bytes(f, inp: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd saves for the backward pass of f(inp)."""
    seen: dict[int, int] = {}

    def pack(t):
        try:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without storage (sparse, ...)
            pass
        # not t itself: an op that saves its own output (tanh, ReLU) would then hold that
        # output's Python tensor in its own graph, a cycle that Python's gc cannot see, and
        # the graph kept the model's weights alive after every probe (a model per analyze)
        return t.detach()

    inp = inp.detach().requires_grad_(True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        f(inp)
    return sum(seen.values())


def activation_bytes(make_f, lift) -> int:
    """Per-sample activation bytes A: saved bytes on 2 samples minus those on 1.

    ``lift(k)`` gives the differentiated tensor of the first k samples, ``make_f(k)`` the
    function of it."""
    one = saved_bytes(make_f(1), lift(1))
    two = saved_bytes(make_f(2), lift(2))
    return max(two - one, 0)


def sample_bytes(*, activations: int, input_bytes: int, keep_bytes: int) -> int:
    """Working memory of one sample of a chunk (module docstring)."""
    return max(1, 2 * activations + 3 * input_bytes + keep_bytes)


def chunk_size(budget: int, *, activations: int, input_bytes: int, keep_bytes: int) -> int:
    """Samples per chunk within ``budget`` bytes (module docstring)."""
    per_sample = sample_bytes(activations=activations, input_bytes=input_bytes,
                              keep_bytes=keep_bytes)  # fmt: skip
    return max(1, min(MAX_CHUNK, budget // per_sample))


def forward_bytes(run) -> int:
    """Bytes of every module output of one forward pass ``run()`` (forward hooks, no grad):
    an upper bound on what a gradient-free forward pass keeps alive at once."""
    from torch import nn

    total = [0]

    def hook(mod, args, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    return total[0]
