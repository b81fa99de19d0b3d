"""What a cached analysis entry is keyed by: SHA-256 digests of a checkpoint's bytes, of the
data, of the model section (with a factory file's bytes) and of alignctl's own source
(:mod:`alignctl.report.cache` combines them with the metric set and the options).

A checkpoint's digest is memoised on its path and each file's size, mtime, ctime and inode,
so a ``--follow`` loop or a re-run in the same process hashes each file once; a Hugging
Face folder is hashed file by file in name order, each name included, so renaming a file
inside it changes the key.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
from pathlib import Path

import torch

_CHUNK = 1 << 20


def canonical(obj, *, allow_nan: bool = False) -> str:
    """Strict JSON (what the cache's files hold): a non-finite float is a ValueError."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=allow_nan,
                      default=repr)  # fmt: skip


def key_text(obj) -> str:
    """The text a key digests: :func:`canonical`, but a non-finite float (a factory's
    ``scale: .inf``, a data set's meta) is written as ``Infinity``/``NaN`` instead of raising:
    the text is only hashed, never read back."""
    return canonical(obj, allow_nan=True)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _hash_file(h, path: Path) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)


@functools.lru_cache(maxsize=4096)
def _digest_cached(path: str, *_identity) -> str:
    h = hashlib.sha256()
    p = Path(path)
    if p.is_dir():  # a Hugging Face folder: every file, by relative name
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(str(f.relative_to(p)).encode() + b"\0")
            _hash_file(h, f)
    else:
        _hash_file(h, p)
    return h.hexdigest()


def content_digest(path: Path) -> str:
    """SHA-256 of a checkpoint's bytes (memoised on its path and its files' identities);
    InputError when it cannot be read (removed after it was found: a trainer that keeps only
    its last checkpoints)."""
    from alignctl.errors import InputError
    from alignctl.runs.checkpoints.stable import identity  # size, mtime, ctime, inode

    p = Path(path)
    try:
        # ctime and inode too: no copy that keeps the mtime (cp -p, rsync -t, touch -r) and no
        # rename into place keeps them
        return _digest_cached(str(p.resolve()), *identity(p))
    except OSError as e:
        raise InputError(f"cannot read checkpoint {p}: {e.strerror or e}") from None


def tensor_digest(h, t) -> None:
    """Feed ``t``'s dtype, shape and bytes (or ``none``) to the hash ``h``."""
    if t is None:
        h.update(b"none")
        return
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())


def data_digest(data) -> str:
    h = hashlib.sha256()
    for t in (data.x_train, data.y_train, data.x_test, data.y_test):
        tensor_digest(h, t)
    h.update(key_text([data.num_classes, data.input_range, data.meta]).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 of alignctl's own source files."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def model_material(run) -> dict:
    """The model section, with the SHA-256 of the factory's source (its file or module and
    every module it imported from beside it: ``from helpers import x``, the package's other
    modules) and the versions of the installed libraries those modules use (``transformers``),
    so changed code never reads numbers the old code computed. A factory file is named without
    its folder: the key is the same wherever the run is checked out."""
    spec = dict(run.config.model or {})
    factory = spec.get("factory")
    if isinstance(factory, str) and ":" in factory:
        spec["factory_sha256"], spec["factory_libraries"] = _factory_sources(
            factory, Path(run.config.base_dir)
        )
        target, name = factory.rsplit(":", 1)
        located = target.endswith(".py") or "/" in target or "\\" in target  # as config.py
        if spec["factory_sha256"] is not None and located:
            # its code is keyed by content: where the file lies (--model makes it absolute, and
            # each CI runner checks out elsewhere) must not change the key
            spec["factory"] = f"{os.path.basename(target.replace(chr(92), '/'))}:{name}"
    elif isinstance(spec.get("arch"), str):  # an architecture a user registered: its code
        from alignctl.runs.models import MODELS

        if spec["arch"] in MODELS.names():
            spec["arch_sources"] = registered_sources(MODELS.get(spec["arch"]))
    return spec


def metrics_material(names: list[str]) -> dict:
    """For each metric a user registered (``register_metric`` outside alignctl, whose own
    source is :func:`code_fingerprint`'s): the SHA-256 of its code, as for a factory, so a
    metric whose code changed never reads the numbers the old code computed."""
    from alignctl.geometry.metrics import METRICS

    return {n: registered_sources(METRICS.get(n).fn) for n in names if n in METRICS.names()}


def registered_sources(fn) -> list | None:
    """The sources of a registered callable from outside alignctl (None for alignctl's own)."""
    module = getattr(fn, "__module__", None) or ""
    if module == "alignctl" or module.startswith("alignctl."):
        return None
    return list(_sources(fn))


def _installed(name: str) -> str | None:
    """``name==version`` for an installed top-level package (site-/dist-packages), else None."""
    import sys

    top = sys.modules.get(name.split(".")[0])
    version, origin = getattr(top, "__version__", None), getattr(top, "__file__", None)
    if isinstance(version, str) and isinstance(origin, str) and "-packages" in origin:
        return f"{top.__name__}=={version}"
    return None


def _factory_sources(factory: str, base_dir: Path) -> tuple[str | None, list[str]]:

    from alignctl.errors import InputError
    from alignctl.runs.factories import load_callable

    try:
        fn = load_callable(factory, base_dir)  # imported already when the run was opened
    except InputError:
        return None, []
    return _sources(fn)


def _sources(fn) -> tuple[str | None, list[str]]:
    """SHA-256 of the source of ``fn``'s module and the local modules beside it, and the
    installed libraries they use (an installed module: its version instead)."""
    import sys

    name = getattr(fn, "__module__", None) or ""
    if _installed(name):
        return _installed(name), []  # installed: its version says which code it is
    module = sys.modules.get(name)
    top = sys.modules.get((getattr(module, "__package__", None) or "").split(".")[0])
    origin = getattr(top or module, "__file__", None)
    if origin is None:  # defined in a notebook or `python -c`: the function's own code
        code = getattr(fn, "__code__", None)
        return (None if code is None else sha(repr((code.co_code, code.co_consts)))), []
    # a package: its folder above __init__.py; a file or module: the folder it is in
    folder = os.path.dirname(os.path.abspath(origin)).rstrip(os.sep)
    local = {}
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)  # torch._classes says "_classes.py": relative
        if isinstance(f, str) and f.endswith(".py") and os.path.isabs(f):
            if os.path.abspath(f).startswith(folder + os.sep) and os.path.isfile(f):
                local[os.path.abspath(f)] = m
    h, libraries = hashlib.sha256(), set()
    for f in sorted(local):
        h.update(os.path.relpath(f, folder).encode() + b"\0")
        try:
            _hash_file(h, f)
        except OSError:
            h.update(b"unreadable")
        for v in list(vars(local[f]).values()):  # `import transformers`, `from torch import nn`
            used = v.__name__ if inspect.ismodule(v) else getattr(v, "__module__", None)
            libraries.add(_installed(used) if isinstance(used, str) else None)
    return h.hexdigest(), sorted(lib for lib in libraries if lib)
