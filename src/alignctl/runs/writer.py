"""Who is writing a run folder, and whether that process still lives: the writer record.

A writer that holds no folder lock (``alignctl.Monitor`` inside a user's own training loop)
records itself in ``FOLDER/.alignctl-writer.json``::

    {"pid": 4242, "start": 123456, "boot": "6f1c...", "host": "node7", "token": "9a3e..."}

``start`` is the process start time (``/proc/PID/stat`` field 22, clock ticks since boot) and
``boot`` the kernel's boot id, so a pid reused by another process after the writer died, or a
reboot, is never taken for the writer. ``token`` names one writer object: a second monitor
opened on the folder by the same process (a notebook cell run again) replaces the record, and
the first one then knows the folder is no longer its own.

:func:`writer_alive` answers True (that process runs), False (it has ended: killed, crashed,
exited without closing) or None (cannot be told: no record, another host, no ``/proc``); a
reader never waits for a writer it knows is gone (``alignctl analyze --follow``), and never
takes "unknown" for gone.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path

from alignctl.runs.limits import loads_json

WRITER_FILE = ".alignctl-writer.json"
MAX_RECORD_BYTES = 4096  # a record is ~150 bytes; anything far larger was not written here


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _boot_id() -> str | None:
    text = _read("/proc/sys/kernel/random/boot_id")
    return text.strip() if text else None


def _start_and_state(pid: int) -> tuple[int, str] | None:
    """(start time in clock ticks since boot, state letter) of ``pid``, None if it is not
    running or ``/proc`` cannot tell. The name field may hold spaces and parentheses: the
    fields are counted after its last ``)``."""
    text = _read(f"/proc/{pid}/stat")
    if not text or ")" not in text:
        return None
    fields = text.rsplit(")", 1)[1].split()
    try:
        return int(fields[19]), fields[0]  # field 22 (starttime), field 3 (state)
    except (IndexError, ValueError):
        return None


def identity() -> dict:
    """This process: pid, start time and boot id (None where ``/proc`` is absent), host, and a
    fresh token naming the caller."""
    pid = os.getpid()
    found = _start_and_state(pid)
    return {"pid": pid, "start": found[0] if found else None, "boot": _boot_id(),
            "host": socket.gethostname(), "token": uuid.uuid4().hex}  # fmt: skip


def record_writer(folder: Path) -> str:
    """Write this process's record into ``folder`` (atomically); returns its token."""
    from alignctl.runs.atomic import atomic_write_text

    me = identity()
    atomic_write_text(Path(folder) / WRITER_FILE, json.dumps(me) + "\n")
    return me["token"]


def read_record(folder: Path) -> dict | None:
    """The folder's writer record, or None (absent, unreadable, not a record)."""
    path = Path(folder) / WRITER_FILE
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            return None
        rec = loads_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    pid = rec.get("pid") if isinstance(rec, dict) else None
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < 2**31:
        return None  # not a pid any system gives
    return rec


def owns(folder: Path, token: str) -> bool:
    """Whether the record in ``folder`` is still the one written with ``token``."""
    rec = read_record(folder) if token is not None else None
    return rec is not None and rec.get("token") == token


def release_writer(folder: Path, token: str) -> None:
    """Remove the record if it is still ``token``'s (a writer that closed is not running)."""
    if owns(folder, token):
        try:
            (Path(folder) / WRITER_FILE).unlink()
        except OSError:
            pass


def writer_alive(folder: Path) -> bool | None:
    """Whether the process the folder's record names still runs (see the module docstring)."""
    rec = read_record(folder)
    if rec is None or rec.get("host") != socket.gethostname():
        return None
    boot, start = rec.get("boot"), rec.get("start")
    if boot is None or start is None or _boot_id() is None:
        return _exists_without_proc(rec["pid"])
    if boot != _boot_id():
        return False  # the machine restarted since: that process is gone
    found = _start_and_state(rec["pid"])
    if found is None:
        return False if os.path.isdir("/proc/self") else None
    started, state = found
    return started == start and state not in ("Z", "X")  # a zombie has ended


def _exists_without_proc(pid: int) -> bool | None:
    """Without /proc (macOS, BSD): signal 0 says whether the pid exists (a reused pid reads as
    alive: never "gone" wrongly). On Windows os.kill would terminate the process: unknown."""
    if os.name == "nt":
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except OSError:
        return None
    return True
