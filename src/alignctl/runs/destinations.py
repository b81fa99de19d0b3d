"""What an output path is, and whether it can be written: the checks behind
:mod:`alignctl.runs.atomic` and the CLI's up-front output checks (docs/guarantees.md).

Kinds: "new" (nothing there yet), "file" (a regular file, symlinks followed) and "stream" (a
character device, a FIFO, or a ``/proc/*/fd`` view of an open descriptor such as
``/dev/stdout``: written in place, never replaced). Folders, block devices and sockets are
refused. The checks create and open nothing (opening a FIFO would block).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

# Links into these are views of an open file descriptor: writing "the target" must go through
# the descriptor (a replace would detach a shell's redirection from its file).
_FD_VIEWS = ("/proc/", "/dev/fd/")


def _fd_view(path: Path) -> bool:
    """True if ``path`` is, or a chain of symlinks from it reaches, a ``/proc/*/fd`` link."""
    p = str(path)
    for _ in range(40):  # the kernel's own symlink limit
        if p.startswith(_FD_VIEWS) or p in ("/dev/stdout", "/dev/stderr", "/dev/stdin"):
            return True
        try:
            link = os.readlink(p)
        except OSError:
            return False
        p = os.path.join(os.path.dirname(p), link)
    return False


def destination_kind(path: str | os.PathLike[str]) -> tuple[str, Path]:
    """``("new" | "file" | "stream", where to write)``; OSError for what cannot be written.

    "new": nothing there yet (a dangling symlink: its target is created); "file": a regular
    file, the returned path is its real location (symlinks followed); "stream": a character
    device, a FIFO or a descriptor view, written in place at ``path``. A name ending in ``/``
    names a folder (``Path`` would silently drop the slash and write a file)."""
    if str(path).endswith(("/", os.sep)):
        raise IsADirectoryError(errno.EISDIR, "a name ending in / names a folder, not a file")
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):  # dangling: write (create) what it points to
            return "new", Path(os.path.realpath(path))
        return "new", path
    except NotADirectoryError:
        raise NotADirectoryError(errno.ENOTDIR, "a parent of it is a file, not a folder") from None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "it is a folder")
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return "stream", path
    if stat.S_ISREG(st.st_mode):
        if _fd_view(path):
            return "stream", path
        return "file", Path(os.path.realpath(path))
    what = "a block device" if stat.S_ISBLK(st.st_mode) else "not a regular file"
    raise OSError(errno.EINVAL, f"it is {what}; alignctl writes only files, pipes and terminals")


def _can(path: Path, mode: int) -> bool:
    if os.access in os.supports_effective_ids:
        return os.access(path, mode, effective_ids=True)
    return os.access(path, mode)


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute().parent
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def check_writable(path: str | os.PathLike[str], *, append: bool = False) -> None:
    """Raise OSError (with a short ``strerror``) unless ``path`` can be written now.

    Creates nothing and opens nothing (opening a FIFO would block). A replaced file must be
    writable itself (a read-only file is not replaced behind its owner's back) and in a
    writable folder, an appended or streamed one writable, a new one needs a writable nearest
    existing ancestor (the folders in between are created)."""
    kind, target = destination_kind(path)
    if kind == "stream" or (kind == "file" and append):
        if not _can(target, os.W_OK):
            raise PermissionError(errno.EACCES, "permission denied")
        return
    if kind == "file" and not _can(target, os.W_OK):  # as a shell's `>` would refuse
        raise PermissionError(errno.EACCES, "the file is read-only")
    folder = target.parent if kind == "file" else _existing_ancestor(target)
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{folder} is a file, not a folder")
    if not _can(folder, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"permission denied in {folder}")


def check_writable_folder(path: str | os.PathLike[str]) -> None:
    """Raise OSError unless ``path`` is, or can be created as, a folder to write files in."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):  # mkdir would fail late with "File exists"
            raise FileExistsError(errno.EEXIST, "it is a broken symbolic link") from None
        folder = _existing_ancestor(path)
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{folder} is a file, not a folder") from None
    except NotADirectoryError:
        raise NotADirectoryError(errno.ENOTDIR, "a parent of it is a file, not a folder") from None
    else:
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "it exists and is not a folder")
        folder = path
    if not _can(folder, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"permission denied in {folder}")
