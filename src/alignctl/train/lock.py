"""One writer per run directory: an advisory lock on the run folder itself.

``alignctl train`` (new run or ``--resume``) and each ``race`` pair take the lock before they
change anything in the folder and hold it until they finish. The lock is ``flock(2)`` on the
folder (``fcntl.flock`` on a directory descriptor), so no lock file is added to anyone's
folder, and the kernel drops it when the process exits, however it exits (``kill -9``
included): a killed run never leaves a stale lock behind. A second writer is refused at once,
never queued. Where ``fcntl`` does not exist (Windows) the lock is ``msvcrt.locking`` on a
hidden ``.alignctl.lock`` file in the folder.

While it holds the lock the process also names itself in the folder's writer record
(:mod:`alignctl.runs.writer`, removed on release): where ``/proc/locks`` cannot say whether
the lock is held (btrfs subvolumes, overlayfs: :func:`lock_held` answers None), ``analyze
--follow`` still learns from the record that a killed trainer is gone.
"""

from __future__ import annotations

import os
from pathlib import Path

from alignctl.errors import InputError

LOCK_NAME = ".alignctl.lock"  # only where directories cannot be locked (Windows)


class RunLock:
    """``with RunLock(run_dir):`` or ``acquire()``/``release()``. ``acquire`` creates
    ``run_dir`` if needed and raises :class:`InputError` when another process holds the lock
    (or the folder cannot be created)."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)
        self._fd: int | None = None
        self._token: str | None = None

    def acquire(self) -> RunLock:
        if self._fd is not None:  # held already (train --resume takes it before its imports)
            return self
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = _open(self.dir)
        except OSError as e:
            raise InputError(f"cannot create {self.dir}: {e.strerror or e}") from None
        try:
            _lock(fd)
        except OSError:
            os.close(fd)
            raise InputError(
                f"{self.dir} is in use by another alignctl process (it holds the folder's lock); "
                "wait for it to finish or use another folder"
            ) from None
        from alignctl.runs.writer import record_writer
        from alignctl.train.owned import refuse_live_writer

        try:  # a Monitor holds no lock: its record says it writes the folder
            refuse_live_writer(self.dir)
        except InputError:
            _unlock(fd)
            os.close(fd)
            raise
        self._fd = fd

        try:
            self._token = record_writer(self.dir)
        except OSError:  # the lock is what keeps writers apart; the record only informs
            self._token = None
        return self

    def release(self) -> None:
        if self._fd is not None:
            from alignctl.runs.writer import release_writer

            if self._token is not None:
                release_writer(self.dir, self._token)
            fd, self._fd = self._fd, None
            _unlock(fd)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *_exc) -> None:
        self.release()


try:
    import fcntl

    def _open(folder: Path) -> int:
        return os.open(folder, os.O_RDONLY)

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # OSError (EWOULDBLOCK) when held

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # Windows: directories cannot be opened, lock a file inside
    import msvcrt

    def _open(folder: Path) -> int:
        return os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)

    def _lock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        try:
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass


def _ident(path: Path) -> str:
    """How ``/proc/locks`` names a file: MAJOR:MINOR:INODE (hex device numbers)."""
    st = os.stat(path)
    return f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"


def _flocks() -> list[str]:
    with open("/proc/locks", encoding="ascii", errors="replace") as fh:
        return [line for line in fh.read().splitlines() if " FLOCK " in f" {line} "]


def _listed(ident: str, lines: list[str], pid: int | None = None) -> bool:
    return any(f" {ident} " in ln and (pid is None or f" {pid} " in ln) for ln in lines)


def lock_held(run_dir: Path) -> bool | None:
    """Whether a process holds ``run_dir``'s lock, read from ``/proc/locks`` without taking
    it (taking it, even for a moment, could refuse a trainer starting then). None where that
    cannot be told: no ``/proc/locks`` (not Linux), or a file system whose locks it names by
    other device numbers than ``stat`` gives (btrfs subvolumes, overlayfs): before answering
    "free", a shared lock on the run's ``checkpoints`` folder (never a run's lock) must show
    up under the name ``stat`` predicts, else "free" could be a live trainer's lock missed."""
    try:
        if _listed(_ident(run_dir), _flocks()):
            return True
        probe = Path(run_dir) / "checkpoints"
        fd = os.open(probe, os.O_RDONLY)
    except (OSError, AttributeError):  # AttributeError: os.major, fcntl absent
        return None
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        seen = _listed(_ident(probe), _flocks(), os.getpid())
        fcntl.flock(fd, fcntl.LOCK_UN)
    except (OSError, ImportError):
        return None
    finally:
        os.close(fd)
    return False if seen else None
