"""CPU thread counts: one thread for small models, more only when the work pays for them.

torch's default is one intra-op thread per core. For small networks every operation is too
short to split, and on a busy machine the threads mostly wait for each other: ``alignctl
train`` of an MLP ran 33x slower with the default than with one thread (issue 11;
``benchmarks/threads.py`` measures it). The rule (:func:`auto_threads`):

- the work of one batch is estimated as multiply-adds of a forward pass: every leaf module
  contributes ``output elements x (weight elements / output channels)`` (a linear layer's
  in x out, a convolution's output x C_in k_h k_w), or its output elements when it has no
  weight;
- below ``small`` multiply-adds one thread; above it one thread per ``small``, up to the
  cores this process may use;
- analysis (:data:`SMALL_WORK`, 5e7: a few milliseconds on one core) is ``load_aware``: it
  also leaves out the cores that other processes keep busy (the 1-minute load average);
- training (:data:`TRAIN_SMALL_WORK`, 1e9 per step) is not: the thread count changes the
  weights in the last bits (measured: 1 vs 2 threads on the sparse-parity preset), so a run and
  its resumption must choose the same count, from the model and batch alone. The higher bar
  keeps small models on one thread even on a busy machine, where a second thread mostly waits
  (18x slower measured on a loaded 2-core machine, ``benchmarks/threads.py``).

``OMP_NUM_THREADS`` set in the environment is the user's choice and wins over the rule;
``--threads N`` / ``threads=`` over both.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

from alignctl.errors import short

SMALL_WORK = 5e7
TRAIN_SMALL_WORK = 1e9


def cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def forward_work(model: nn.Module, xb: torch.Tensor, run=None) -> float:
    """Multiply-adds of one forward pass on xb (module docstring); ``run(model, xb)`` makes
    the call (default ``model(xb)``)."""
    total = [0.0]

    def hook(mod, args, out):
        if not isinstance(out, torch.Tensor):
            return
        w = getattr(mod, "weight", None)
        per = 1.0
        if isinstance(w, torch.Tensor) and w.dim() >= 2 and not isinstance(mod, nn.Embedding):
            per = w.numel() / max(1, w.shape[0])
        total[0] += out.numel() * per

    from alignctl.geometry.devices import eval_mode

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad(), eval_mode(model):
            # a copy: a forward that writes its input (x /= 255) must not change the data
            (run or (lambda m, x: m(x)))(model, xb.clone())
    except Exception:  # an estimate only: a model that fails here fails visibly later
        pass
    finally:
        for h in handles:
            h.remove()
    if not total[0]:  # functional models without modules: count the parameters
        total[0] = float(sum(p.numel() for p in model.parameters())) * xb.shape[0]
    return total[0]


def auto_threads(work: float, *, load_aware: bool = False, small: float = SMALL_WORK) -> int:
    """Threads for a batch of ``work`` multiply-adds (module docstring)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    avail = cores()
    if load_aware:
        try:
            busy = int(os.getloadavg()[0])
        except (AttributeError, OSError):
            busy = 0
        avail = max(1, avail - busy)
    return int(max(1, min(avail, work // small)))


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to n for the duration (None: unchanged)."""
    if n is None:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


# torch.set_num_threads(100000) kills the process (SIGSEGV, or libgomp's "Thread creation
# failed" abort) the first time work runs; 4096 threads still ran on a 2-core machine
MAX_THREADS = 1024


def check_threads(n) -> int | None:
    """None, or an integer in 1..:data:`MAX_THREADS`; InputError otherwise."""
    from alignctl.errors import InputError

    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
        raise InputError(f"threads must be an integer from 1 to {MAX_THREADS}, not {short(n)}")
    return n
