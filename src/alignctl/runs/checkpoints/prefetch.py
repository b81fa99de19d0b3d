"""Reading the next checkpoint while this one is measured: the kernel is asked to bring its
bytes into the page cache (``posix_fadvise(..., POSIX_FADV_WILLNEED)``), which starts the disk
reads in the background and returns at once.

Why not a thread that loads the next state dict: that holds two checkpoints in memory, which a
checkpoint too big to fit twice cannot afford; the page cache costs the process nothing and
the kernel drops it under memory pressure. Where the call does not exist (macOS, Windows) or
fails, nothing happens: prefetching is an optimisation, never a reason to stop.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_FILES = 256  # a Hugging Face folder: its weight files, not a whole tree


def prefetch(path: str | os.PathLike[str]) -> int:
    """Ask the kernel to read ``path`` (a file, or the files of a folder) ahead; returns the
    number of files it was asked for (0 where the platform has no such call)."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return 0
    p = Path(path)
    try:
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    except OSError:
        return 0
    asked = 0
    for f in files[:MAX_FILES]:
        try:
            fd = os.open(f, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)  # a pipe or device: ESPIPE/EINVAL
            asked += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return asked
