"""The pre-0.2 flat module paths, importable for one release with a DeprecationWarning.

``alignctl.checkpoints`` became ``alignctl.runs.checkpoints`` and so on (docs/architecture.md).
A meta-path finder maps an old name (and its submodules) to the new module object, so that
``import alignctl.checkpoints`` and ``from alignctl.regularisers.grokalign import GrokAlign``
keep working and return the very same module objects (registries are not duplicated).
Old names that are now packages (``alignctl.geometry``, ``alignctl.report``,
``alignctl.evaluation``, ``alignctl.cli``) forward their old attributes from the packages'
``__getattr__``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old module -> new module (submodules follow their package)
MOVED = {
    "alignctl.linear_input": "alignctl.geometry.linear_input",
    "alignctl.devices": "alignctl.geometry.devices",
    "alignctl.metrics": "alignctl.geometry.metrics",
    "alignctl.atomic": "alignctl.runs.atomic",
    "alignctl.config": "alignctl.runs.config",
    "alignctl.factories": "alignctl.runs.factories",
    "alignctl.checkpoints": "alignctl.runs.checkpoints",
    "alignctl.run": "alignctl.runs.run",
    "alignctl.tasks": "alignctl.runs.tasks",
    "alignctl.models": "alignctl.runs.models",
    "alignctl.losses": "alignctl.evaluation.losses",
    "alignctl.attacks": "alignctl.evaluation.attacks",
    "alignctl.training": "alignctl.train.trainer",
    "alignctl.trainstate": "alignctl.train.state",
    "alignctl.regularisers": "alignctl.train.regularisers",
    "alignctl.presets": "alignctl.train.presets",
    "alignctl.race": "alignctl.train.race",
    "alignctl.analysis": "alignctl.report.analysis",
    "alignctl.verdict": "alignctl.report.verdict",
    "alignctl.gates": "alignctl.report.gates",
    "alignctl.cli_analyze": "alignctl.cli.analyze",
    "alignctl.cli_train": "alignctl.cli.train",
    "alignctl.cli_race": "alignctl.cli.race",
}


def new_name(old: str) -> str | None:
    for prefix, target in MOVED.items():
        if old == prefix or old.startswith(prefix + "."):
            return target + old[len(prefix) :]
    return None


def warn_moved(old: str, new: str, stacklevel: int = 3) -> None:
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:  # already executed under its new name
        pass


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        warn_moved(fullname, new, stacklevel=4)
        is_pkg = importlib.util.find_spec(new).submodule_search_locations is not None
        return importlib.util.spec_from_loader(fullname, _Alias(new), is_package=is_pkg)


def forward(package: str, old_module: str, target_module: str, name: str):
    """For a package's ``__getattr__``: ``name`` from ``target_module``, with a warning.

    A name that is one of the package's own submodules is not looked up there: ``from
    alignctl.report import monitor_log`` asks the package for ``monitor_log`` before it imports
    the submodule, and importing ``target_module`` then (the renderers: rich, whose import
    draws from Python's ``random``) would change a training loop's random numbers."""
    if not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module = importlib.import_module(target_module)
    if not hasattr(module, name):
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    warn_moved(f"{old_module}.{name}", f"{target_module}.{name}")
    return getattr(module, name)


def install() -> None:
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())  # before PathFinder: no duplicate modules
