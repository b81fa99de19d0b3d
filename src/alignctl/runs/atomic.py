"""Atomic file writes: a crash or an exception never leaves a half-written file behind.

The writer fills a temporary file in the destination folder (``.{name}.tmp-XXXX``, so it is on
the same filesystem and hidden from checkpoint discovery), the data is fsync'ed, then
``os.replace`` swaps it onto the destination in one step. On any exception the temporary file
is removed and the previous file, if there was one, is left exactly as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Run ``writer(tmp_path)`` then move ``tmp_path`` onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        # The writer may have closed (or replaced) the file: reopen to flush it to disk.
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # Persist the rename itself; not every platform lets a folder be opened.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_save_safetensors(
    tensors: dict[str, Any], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """Save ``tensors`` as safetensors; tensors are made contiguous and any that share storage
    with an earlier one (tied weights) are cloned, since safetensors refuses both."""
    from safetensors.torch import save_file

    flat, seen = {}, set()
    for key, value in tensors.items():
        value = value.detach().cpu().contiguous()
        ptr = value.untyped_storage().data_ptr()
        flat[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    atomic_write(path, lambda tmp: save_file(flat, str(tmp), metadata=metadata))


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files (``.{name}.tmp-XXXX``) that a killed writer left in
    ``folder`` and its subfolders; returns what was removed. Call it only while no other
    process writes there (the caller holds the run's lock or is the only writer)."""
    removed = []
    for p in Path(folder).rglob(".*.tmp-*"):
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
