"""alignctl: training-run diagnostics from the geometry of a network's Jacobian (GrokAlign).

The public API (everything else is internal and may move):

- measurement: :func:`measure`, :func:`jacobian` (``alignctl.geometry``);
- runs: :func:`open_run`, :class:`Dataset` (what a data factory returns) (``alignctl.runs``);
- analysis: :func:`analyze` (``alignctl.report``);
- training: :class:`Trainer`, :func:`build_config`, :func:`build_regulariser` (``alignctl.train``);
- inside other training loops: :class:`Monitor` (``alignctl.integrations``);
- registries and their decorators: ``METRICS``/:func:`register_metric`,
  ``TASKS``/:func:`register_task`, ``MODELS``/:func:`register_model`,
  ``REGULARISERS``/:func:`register_regulariser`, ``LOSSES``/:func:`register_loss`, ``PRESETS``.

Names are resolved lazily (PEP 562) so that ``import alignctl`` and ``alignctl --help`` do
not import torch. The pre-0.2 flat module paths (``alignctl.checkpoints``, ...) still import,
with a DeprecationWarning, for one release (:mod:`alignctl._compat`).
"""

from alignctl import _compat
from alignctl._version import __version__

# public name -> (module, attribute)
_PUBLIC = {
    "measure": ("alignctl.geometry.measure", "measure"),
    "jacobian": ("alignctl.geometry.measure", "jacobian"),
    "open_run": ("alignctl.runs.run", "open_run"),
    "analyze": ("alignctl.report.analysis", "analyze"),
    "Trainer": ("alignctl.train.trainer", "Trainer"),
    "build_config": ("alignctl.train.build", "build_config"),
    "build_regulariser": ("alignctl.train.regularisers", "build_regulariser"),
    "METRICS": ("alignctl.geometry.metrics", "METRICS"),
    "register_metric": ("alignctl.geometry.metrics", "register_metric"),
    "Dataset": ("alignctl.runs.tasks", "Dataset"),
    "TASKS": ("alignctl.runs.tasks", "TASKS"),
    "register_task": ("alignctl.runs.tasks", "register_task"),
    "MODELS": ("alignctl.runs.models", "MODELS"),
    "register_model": ("alignctl.runs.models", "register_model"),
    "REGULARISERS": ("alignctl.train.regularisers", "REGULARISERS"),
    "register_regulariser": ("alignctl.train.regularisers", "register_regulariser"),
    "LOSSES": ("alignctl.evaluation.losses", "LOSSES"),
    "register_loss": ("alignctl.evaluation.losses", "register_loss"),
    "PRESETS": ("alignctl.train.presets", "PRESETS"),
    "Monitor": ("alignctl.integrations.monitor", "Monitor"),
}

__all__ = ["__version__", *_PUBLIC]

_compat.install()


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        module, attr = _PUBLIC[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # resolved once
        return value
    raise AttributeError(f"module 'alignctl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
