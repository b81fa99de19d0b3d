"""The architecture stays true: layers import only downward, the library never imports the CLI,
no command module imports another, the public API is lazy, and the pre-0.2 module paths
still work (with a DeprecationWarning) for one release."""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import alignctl

SRC = Path(alignctl.__file__).parent
# low -> high; a module may import its own layer and the ones below it
LAYERS = ["base", "geometry", "runs", "evaluation", "train", "report", "integrations", "cli"]
BASE = {"alignctl", "alignctl._version", "alignctl.errors", "alignctl.registry", "alignctl._compat"}


def _layer(module: str) -> str:
    if module in BASE or module.count(".") == 0:
        return "base"
    return module.split(".")[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("alignctl"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("alignctl"))
    return found


def _modules():
    return sorted(p for p in SRC.rglob("*.py") if p.name != "__main__.py")


def _real(name: str) -> str | None:
    """The module an import names (``from alignctl.x import y`` may name a module or a name)."""
    candidate = SRC.parent / Path(*name.split("."))
    if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
        return name
    return None


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_down_only(path):
    me = _module_name(path)
    if me == "alignctl._compat":
        return  # the shim for old paths maps names, it imports nothing by layer
    mine = LAYERS.index(_layer(me))
    for name in _imports(path):
        target = _real(name)
        if target is None or target in ("alignctl", "alignctl._compat"):
            continue
        assert LAYERS.index(_layer(target)) <= mine, f"{me} imports upward: {target}"


# shared by the commands, not commands themselves: options and errors, the live --follow view
CLI_HELPERS = ("common", "live", "process")


@pytest.mark.parametrize("path", sorted((SRC / "cli").glob("*.py")), ids=lambda p: p.name)
def test_no_command_module_imports_another(path):
    if path.name in ("__init__.py", "assemble.py") or path.stem in CLI_HELPERS:
        return
    helpers = {f"alignctl.cli.{h}" for h in CLI_HELPERS}
    others = (
        {f"alignctl.cli.{p.stem}" for p in (SRC / "cli").glob("*.py")}
        - helpers
        - {
            f"alignctl.cli.{path.stem}",
        }
    )
    assert not (_imports(path) & (others | {"alignctl.cli"}))


def test_every_subpackage_says_what_it_owns():
    for init in SRC.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc, f"{init.parent.name}/__init__.py must say what it may import"


def test_public_api_is_lazy_and_complete():
    code = (
        "import sys, alignctl; assert 'torch' not in sys.modules; "
        "names = [n for n in alignctl.__all__ if n != '__version__']; "
        "[getattr(alignctl, n) for n in names]; print(len(names))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for name in ("measure", "jacobian", "open_run", "analyze", "build_regulariser", "Trainer"):
        assert name in alignctl.__all__


def test_help_does_not_import_torch():
    code = (
        "import sys; from alignctl.cli import app; "
        "assert 'torch' not in sys.modules, 'torch imported by the CLI at start-up'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    "old, new, attr",
    [
        ("alignctl.checkpoints", "alignctl.runs.checkpoints", "read_checkpoint"),
        ("alignctl.training", "alignctl.train.trainer", "Trainer"),
        ("alignctl.regularisers.grokalign", "alignctl.train.regularisers.grokalign", "GrokAlign"),
        ("alignctl.metrics", "alignctl.geometry.metrics", "METRICS"),
        ("alignctl.verdict", "alignctl.report.verdict", "recommend"),
    ],
)
def test_old_module_paths_warn_and_are_the_same_objects(old, new, attr):
    code = (
        "import importlib, warnings\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        f"    old = importlib.import_module({old!r})\n"
        f"new = importlib.import_module({new!r})\n"
        f"assert getattr(old, {attr!r}) is getattr(new, {attr!r})\n"
        "assert any(issubclass(x.category, DeprecationWarning) for x in w), w\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_old_package_level_names_forward_with_a_warning():
    from alignctl.report import render

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        import alignctl.report

        assert alignctl.report.to_csv is render.to_csv
    assert any(issubclass(x.category, DeprecationWarning) for x in w)
