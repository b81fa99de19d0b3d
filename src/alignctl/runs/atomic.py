"""Output files: a crash, a signal or a full disk never leaves a half-written or replaced file.

What a destination gets depends on what it is (:func:`destination_kind`), and its kind never
changes:

- a regular file, or a path that does not exist yet: the writer fills a temporary file in the
  same folder (``.{name}.tmp-{pid}-XXXX``: same filesystem, hidden from checkpoint discovery),
  the data is fsync'ed, then ``os.replace`` swaps it onto the destination in one step. A
  symlink to a regular file is followed: its target is replaced and the link kept. New files
  get ``0o666 & ~umask`` (as ``open`` would); a replaced file keeps its mode.
- a character device or FIFO (``/dev/null``, a named pipe, ``/dev/stdout`` and other
  ``/proc/self/fd`` links, followed): opened for writing and written in place, never replaced.
- a folder, a block device or a socket: refused (``OSError``) before anything is written.

Missing parent folders are created (``mkdir -p``): ``train --out runs/x`` and ``--json
reports/x.json`` work on a fresh clone; :func:`check_writable` says up front, without creating
anything, whether a write can succeed.

On any exception (``KeyboardInterrupt`` and the CLI's SIGTERM included) the temporary file is
removed and the previous file is left exactly as it was. A ``kill -9`` cannot be caught: its
temporary file is removed by the next write of the same destination
(:func:`remove_stale_siblings`), or by :func:`remove_stale_temporaries` on ``train --resume``.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignctl.runs.destinations import check_writable, check_writable_folder, destination_kind

__all__ = [
    "append_bytes", "atomic_save_safetensors", "atomic_torch_save", "atomic_write",
    "atomic_write_bytes", "atomic_write_text", "check_writable", "check_writable_folder",
    "destination_kind", "remove_stale_siblings", "remove_stale_temporaries",
]  # fmt: skip

TMP_TAG = ".tmp-"


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def remove_stale_siblings(target: Path) -> list[Path]:
    """Remove ``.{name}.tmp-{pid}-*`` files of ``target`` whose writer process is gone.

    Safe: a temporary file is only ever renamed by the process whose pid it carries; when that
    process no longer exists nothing will use the file again, and the destination itself is
    never touched. A live pid (even a reused one) keeps its file: a concurrent writer of the
    same destination is never disturbed. (Writers in another pid namespace sharing the folder
    could be mistaken for dead; the worst case is their write failing cleanly.)"""
    removed = []
    prefix = f".{target.name}{TMP_TAG}"
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for e in entries:
        if not e.name.startswith(prefix):
            continue
        pid = e.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                if e.is_file(follow_symlinks=False):
                    os.unlink(e.path)
                    removed.append(Path(e.path))
            except OSError:
                pass
    return removed


def _finish_mode(tmp: Path, old: os.stat_result | None) -> None:
    if old is None:
        os.chmod(tmp, 0o666 & ~_umask())
        return
    os.chmod(tmp, stat.S_IMODE(old.st_mode))
    if hasattr(os, "chown") and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
        try:  # only root can give a file away; others keep their own ownership
            os.chown(tmp, old.st_uid, old.st_gid)
        except OSError:
            pass


def atomic_write(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Run ``writer(p)`` so that ``path`` ends up with what it wrote, or is left as it was.

    For a regular or new destination ``p`` is a temporary file moved onto it atomically; for
    a stream (device, FIFO) ``p`` is the destination itself, opened by the writer."""
    kind, target = destination_kind(path)
    if kind == "stream":
        writer(Path(path))
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    old = os.stat(target) if kind == "file" else None
    remove_stale_siblings(target)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}{TMP_TAG}{os.getpid()}-", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        # The writer may have closed (or replaced) the file: reopen to flush it to disk.
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _finish_mode(tmp, old)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def append_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Append ``data`` to ``path`` (created if missing, e.g. ``$GITHUB_STEP_SUMMARY``).

    All or nothing for regular files: on a failed write or fsync the file is cut back to its
    old length (a file this call created is removed). Streams are written in place."""
    kind, target = destination_kind(path)
    if kind == "stream":
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    size = os.fstat(fd).st_size
    try:
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        try:
            os.ftruncate(fd, size)
            if kind == "new":
                os.unlink(target)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    if destination_kind(path)[0] == "stream":  # appended: a stream has no "old file"
        append_bytes(path, data)
    else:
        atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


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
    for p in Path(folder).rglob(f".*{TMP_TAG}*"):
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
