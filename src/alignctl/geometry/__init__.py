"""The measurement engine: Jacobians and the alignment metrics computed from them.

Owns ``measure``/``jacobian`` (:mod:`.measure`), the single-linear-input shortcut
(:mod:`.linear_input`), device and mode handling (:mod:`.devices`) and the metric registry
(:mod:`.metrics`). It works on any ``nn.Module`` and tensors: it knows nothing of runs,
checkpoints, training or reports.

May import: the standard library, torch, ``alignctl.errors``, ``alignctl.registry``.
Nothing above it.
"""

_MEASURE = ("measure", "jacobian")


def __getattr__(name: str):
    # ``alignctl.geometry`` was one module before 0.2: its public names stay here, lazily
    # (importing this package must not import torch); its private helpers are forwarded with
    # a DeprecationWarning.
    import importlib

    module = importlib.import_module("alignctl.geometry.measure")
    if name in _MEASURE:
        return getattr(module, name)
    from alignctl._compat import forward

    return forward(__name__, "alignctl.geometry", "alignctl.geometry.measure", name)
