"""The module a measurement runs: through ``torch.compile`` and data-parallel wrappers.

``torch.compile``'s ``OptimizedModule`` (``_orig_mod``), ``nn.DataParallel`` and
``DistributedDataParallel`` (``module``) compute the function of the module they wrap, with
the same parameters. Measuring through the wrapper itself would be wrong or harmful:
DistributedDataParallel's forward broadcasts its buffers (batch-norm statistics) from rank 0,
a collective, so a measurement on one rank (``alignctl.Monitor`` made on rank 0 alone) waits
for ranks that never join it and the job hangs; it also readies the gradient reducer for a
backward the measurement never runs on the weights, and a copy of it (``measure(...,
dtype=torch.float64)``) would copy a process group. DataParallel scatters over its GPUs and
checks that the module sits on its first one. So every layer of these wrappers is taken off,
in any order and nesting (``DataParallel(torch.compile(net))``).
"""

from __future__ import annotations

from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

__all__ = ["unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside every ``torch.compile`` / DataParallel / DistributedDataParallel
    layer around ``model`` (``model`` itself when it is not wrapped)."""
    for _ in range(64):  # a wrapper that contains itself cannot loop forever
        orig = getattr(model, "_orig_mod", None)
        if isinstance(orig, nn.Module):
            model = orig
        elif isinstance(model, (DataParallel, DistributedDataParallel)) and isinstance(
            getattr(model, "module", None), nn.Module
        ):
            model = model.module
        else:
            break
    return model
