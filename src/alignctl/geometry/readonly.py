"""Whether a model provably leaves its input tensor unchanged.

alignctl hands a model a private copy of the data (:mod:`.inputs`), because a ``forward`` may
write into its input (``x /= 255``, ``ReLU(inplace=True)`` first). Copying the 10000 test
inputs costs ~15% of a checkpoint's prediction (MNIST MLP, one thread); where the structure of
the model proves it never writes into its input, prediction may pass the data itself.

Proved, not assumed: :func:`never_writes_input` is True only for ``nn.Sequential`` containers
(nested ones too) of modules of exactly the built-in types below, with no hooks (the modules'
or the global ones), no ``forward`` replaced on an instance and no parametrization (it changes
the type). Walking the layers, the running tensor may share memory with the input while only
views were taken (``Flatten``, ``Unflatten``, ``Identity``, dropout: in eval mode it returns
its input); a layer that computes a new tensor (``Linear``, convolutions, pooling, norms,
activations without ``inplace``) ends that. A layer with ``inplace=True`` writes into the
running tensor: refused while it may be the input, harmless after. Anything else: False, and
the caller copies as before.
"""

from __future__ import annotations

from torch import nn

# a new output tensor; the input is only read
_FRESH = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.LayerNorm, nn.GELU, nn.Tanh, nn.Sigmoid, nn.Softmax, nn.LogSoftmax,
)  # fmt: skip
# a new output tensor unless ``inplace``: then the input itself, written
_MAYBE_INPLACE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.SiLU, nn.Mish, nn.Hardtanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Threshold,
)  # fmt: skip
# may return the input or a view of it (dropout: its input in eval mode; written if inplace)
_VIEWS = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
          nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)  # fmt: skip


def _hooked(m: nn.Module) -> bool:
    """Any forward or backward hook (a hook may write what it sees), or ``forward`` or
    ``__call__`` replaced on the instance."""
    hooks = [v for k, v in vars(m).items() if k.startswith("_") and k.endswith("hooks")
             and ("forward" in k or "backward" in k)]  # fmt: skip
    return any(hooks) or "forward" in vars(m) or "__call__" in vars(m)


def _global_hooks() -> bool:
    from torch.nn.modules import module

    return any(getattr(module, n) for n in dir(module)
               if n.startswith("_global_") and n.endswith("hooks")
               and ("forward" in n or "backward" in n))  # fmt: skip


def _walk(m: nn.Module, alias: bool) -> bool | None:
    """The running tensor's aliasing after ``m`` (True: may be the input), None: unproved."""
    kind = type(m)
    if _hooked(m):
        return None
    if kind is nn.Sequential:
        for child in m:
            alias = _walk(child, alias)
            if alias is None:
                return None
        return alias
    if kind in _FRESH:
        return False
    if kind in _MAYBE_INPLACE or kind in _VIEWS:
        inplace = bool(getattr(m, "inplace", False))
        if inplace and alias:
            return None
        return alias if kind in _VIEWS or inplace else False
    return None


def never_writes_input(model: nn.Module) -> bool:
    """True only when ``model(x)`` provably leaves ``x`` unchanged, in train and eval mode
    (module docstring); False means unproved, not that it writes."""
    if _global_hooks():
        return False
    return _walk(model, True) is not None
