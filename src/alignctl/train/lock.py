"""One writer per run directory: an advisory lock on ``RUN/.alignctl.lock``.

``alignctl train`` (new run or ``--resume``) and each ``race`` pair take the lock before they
change anything in the folder and hold it until the process ends. The lock is ``flock(2)``
(``fcntl.flock``; ``msvcrt.locking`` on Windows): the kernel drops it when the process exits,
however it exits (``kill -9`` included), so a killed run never leaves a stale lock behind. The
lock file itself is left in place (removing it would let two processes lock two different
files of the same name). A second writer is refused at once, never queued.
"""

from __future__ import annotations

import os
from pathlib import Path

from alignctl.errors import InputError

LOCK_NAME = ".alignctl.lock"


class RunLock:
    """``with RunLock(run_dir):`` or ``acquire()``/``release()``. Raises :class:`InputError`
    when another process holds the lock of ``run_dir`` (or the folder cannot be locked)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise InputError(f"cannot create {self.path}: {e.strerror or e}") from None
        try:
            _lock(fd)
        except OSError:
            os.close(fd)
            raise InputError(
                f"{self.path.parent} is in use by another alignctl process (lock {self.path}); "
                "wait for it to finish or use another folder"
            ) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _unlock(fd)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *_exc) -> None:
        self.release()


try:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # OSError (EWOULDBLOCK) when held

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # Windows
    import msvcrt

    def _lock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        try:
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass
