"""User factories: ``"path/to/file.py:name"`` or ``"package.module:name"`` specs.

A config may name a Python callable that builds a model or a dataset. Everything that goes
wrong while finding or calling it is an :class:`InputError` naming the spec, so the CLI shows
one line instead of a traceback from the user's code.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignctl.errors import InputError, short
from alignctl.runs.limits import expand_user
from alignctl.runs.validate import not_found


def _split(spec: str) -> tuple[str, str]:
    if not isinstance(spec, str) or spec.count(":") < 1:
        raise InputError(f"bad factory spec {spec!r}: expected 'file.py:name' or 'module:name'")
    # rsplit so Windows drive letters ("C:\\x.py:f") keep working
    target, name = spec.rsplit(":", 1)
    if not target or not name.isidentifier():
        raise InputError(f"bad factory spec {spec!r}: expected 'file.py:name' or 'module:name'")
    return target, name


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise not_found("factory file", path)
    # a unique name per absolute path: two configs with a `model.py` must not collide
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    mod_name = f"_alignctl_user_{path.stem}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"cannot import factory file {path}")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    # the folder goes on sys.path while importing, so `from helpers import x` works beside it
    sys.path.insert(0, folder)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(mod_name, None)
        raise InputError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
    return module


def load_callable(spec: str, base_dir: Path) -> Callable:
    """Resolve ``spec`` to a callable; file paths are relative to ``base_dir`` unless absolute."""
    target, name = _split(spec)
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = expand_user(target)
        if not path.is_absolute():
            path = Path(base_dir) / path
        module = _import_file(path)
        where = str(path)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise InputError(f"factory module {target!r} cannot be imported: {e}") from e
        except Exception as e:
            raise InputError(f"importing {target} failed: {type(e).__name__}: {e}") from e
        where = target
    obj = getattr(module, name, None)
    if obj is None:
        raise InputError(f"{where} has no attribute {name!r} (factory spec {spec!r})")
    if not callable(obj):
        raise InputError(f"{where}:{name} is not callable (factory spec {spec!r})")
    return obj


def call_factory(spec: str, base_dir: Path, kwargs: dict | None, what: str) -> Any:
    """Call the factory named by ``spec`` with ``kwargs``; any failure is an InputError."""
    fn = load_callable(spec, base_dir)
    if kwargs is not None and not isinstance(kwargs, dict):
        raise InputError(f"{what} factory {spec}: kwargs must be a mapping, got {short(kwargs)}")
    try:
        return fn(**(kwargs or {}))
    except Exception as e:
        raise InputError(f"{what} factory {spec} failed: {type(e).__name__}: {e}") from e


def check_kwargs(fn, kwargs: dict, what: str) -> None:
    """InputError if ``kwargs`` has a key that ``fn`` does not accept (lists the valid ones)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise InputError(
            f"{what}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(params)}"
        )
    missing = [
        n
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in kwargs
    ]
    if missing:
        raise InputError(f"{what}: missing required parameter(s) {', '.join(missing)}")


def check_finite(params: dict, what: str) -> None:
    """InputError naming the first non-finite float (YAML's ``.inf``/``.nan``), nested lists and
    mappings included, in a built-in task's or architecture's parameters: no size, fraction,
    seed or scale of theirs means anything infinite (a user factory's kwargs are its own)."""
    import math

    def walk(v, name):
        if isinstance(v, float) and not math.isfinite(v):
            raise InputError(f"{what}: {name} must be a finite number, got {short(v)}")
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for k, sub in items:
            walk(sub, f"{name}[{k!r}]" if isinstance(v, dict) else f"{name}[{k}]")

    for name, v in params.items():
        walk(v, name)
