"""A checkpoint read that a writer did not change under it.

A writer that rewrites a checkpoint in place (``open(path, "wb")``, no temporary file renamed
into place) while ``analyze`` reads it gives a torn read: a header that no longer matches the
file, or (same size, overwritten) tensors from two versions, weights that never existed. The
file's identity (size, mtime, ctime, inode of every file of a checkpoint: what the cache's
content digest is memoised on, :mod:`alignctl.report.cache_keys`) is taken before and after
the read; a read during which it changed is done again, and a file still changing after
``ATTEMPTS`` reads is an InputError. A read error while the identity changed is the writer's
doing, not the file's: it is retried too. A writer paused half-way for the whole read cannot
be seen from outside, nor a rewrite within one timestamp tick (Linux moves mtime and ctime
in coarse ticks, ~4 ms: a writer rewriting the file continuously, faster than that, still
gives torn reads, measured); atomic writes (``alignctl`` and ``write_checkpoint`` use them)
avoid both.
"""

from __future__ import annotations

from pathlib import Path

from alignctl.errors import InputError

ATTEMPTS = 3


def identity(path: Path) -> tuple:
    """(size, mtime_ns, ctime_ns, inode) of ``path`` and, for a folder, of every file in it."""
    p = Path(path)
    stats = [p.stat()] + ([q.stat() for q in sorted(p.rglob("*"))] if p.is_dir() else [])
    return tuple((s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino) for s in stats)


def _identity_or_none(path: Path):
    try:
        return identity(path)
    except OSError:
        return None


def read_stably(path: Path, read):
    """``read()`` (which reads ``path``), done again while ``path`` changes during it; its
    result once a read saw one version. InputError after ``ATTEMPTS`` changing reads."""
    for _ in range(ATTEMPTS):
        before = _identity_or_none(path)
        try:
            result = read()
        except Exception:
            if before is not None and _identity_or_none(path) != before:
                continue  # failed on a half-written file: read it again
            raise
        if before is not None and _identity_or_none(path) == before:
            return result
    raise InputError(
        f"checkpoint {Path(path).name} changed while it was read, {ATTEMPTS} times: something "
        f"rewrites it in place; analyze it when its writer is done, or write checkpoints to a "
        f"temporary file renamed into place (os.replace)"
    )
