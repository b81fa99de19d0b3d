"""What a cached analysis entry is keyed by: SHA-256 digests of a checkpoint's bytes, of the
data, of the model section (with a factory file's bytes) and of alignctl's own source
(:mod:`alignctl.report.cache` combines them with the metric set and the options).

A checkpoint's digest is memoised on (path, size, mtime), so a ``--follow`` loop or a
re-run in the same process hashes each file once; a Hugging Face folder is hashed file by
file in name order, each name included, so renaming a file inside it changes the key.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import torch

_CHUNK = 1 << 20


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=repr)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _hash_file(h, path: Path) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)


@functools.lru_cache(maxsize=4096)
def _digest_cached(path: str, size: int, mtime_ns: int) -> str:
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
    """SHA-256 of a checkpoint's bytes (memoised on path, size and mtime)."""
    p = Path(path)
    stats = [p.stat()] + ([q.stat() for q in p.rglob("*")] if p.is_dir() else [])
    return _digest_cached(str(p.resolve()), sum(s.st_size for s in stats),
                          max(s.st_mtime_ns for s in stats))  # fmt: skip


def _tensor_digest(h, t) -> None:
    if t is None:
        h.update(b"none")
        return
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())


def data_digest(data) -> str:
    h = hashlib.sha256()
    for t in (data.x_train, data.y_train, data.x_test, data.y_test):
        _tensor_digest(h, t)
    h.update(canonical([data.num_classes, data.input_range, data.meta]).encode())
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
    spec = dict(run.config.model or {})
    factory = spec.get("factory")
    if isinstance(factory, str) and ":" in factory:
        target = Path(factory.rsplit(":", 1)[0]).expanduser()
        target = target if target.is_absolute() else Path(run.config.base_dir) / target
        if target.is_file():
            spec["factory_sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()
    return spec
