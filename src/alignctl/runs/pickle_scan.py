"""What a torch pickle could allocate, found before it is loaded (nothing is executed).

``torch.load(weights_only=True)`` runs no code, but its allowlist holds ``builtins.bytearray``,
which allocates as many zero bytes as its argument asks: a pickle of a few dozen bytes can ask
for ``bytearray(2**34)``, and call it again and again through the memo, committing all of the
machine's memory before alignctl sees the object. The weights-only unpickler offers no hook
to bound it, so :func:`check_allocations` bounds it from the outside, statically
(:func:`pickletools.genops` only parses opcodes):

- a pickle that names no allocating global (``bytearray``) allocates nothing beyond its own
  size and the storages the zip already declares (:func:`alignctl.runs.limits.check_zip`);
- one that does can allocate at most (calls) x (largest integer it holds): every argument is a
  constant of the stream (a pickle has no arithmetic), reused at will through the memo, and
  each call opcode builds at most one object. Each pickle of a file has its own memo and
  globals: the bounds of those that name an allocator add up. The sum must stay within the
  read budget (:func:`alignctl.runs.limits.read_budget`), else the file is refused in one
  line.

The bound is conservative: a checkpoint that stores a ``bytearray`` object beside very large
tensor sizes may be refused although it allocates little; the message says how to raise the
budget (``ALIGNCTL_MAX_READ_BYTES``). Legacy (non-zip) torch files are a few pickles followed
by raw storage bytes: the pickles up to the first that does not parse are scanned.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

from alignctl.errors import InputError, short
from alignctl.runs.limits import READ_BUDGET_ENV, human, read_budget

ALLOCATORS = ("bytearray",)  # allowlisted globals whose size argument is an allocation
_CALLS = {"REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST"}
_INTS = {"INT", "LONG", "BININT", "BININT1", "BININT2", "LONG1", "LONG4"}
_LEGACY_PICKLES = 8  # magic number, protocol, sys info, the object, storage keys (and spare)


def _scan(stream: io.BufferedIOBase) -> tuple[bool, int, int]:
    """(names an allocator, call opcodes, largest integer) over one pickle of ``stream``."""
    named, calls, largest = False, 0, 0
    for op, arg, _ in pickletools.genops(stream):
        if op.name in _CALLS:
            calls += 1
        elif op.name in _INTS and isinstance(arg, int):
            largest = max(largest, abs(arg))
        elif isinstance(arg, str) and any(a in arg for a in ALLOCATORS):
            named = True  # GLOBAL's "builtins bytearray", or STACK_GLOBAL's pushed name
    return named, calls, largest


def _pickles(source: Path | bytes) -> list[io.BufferedIOBase]:
    """The pickles of a torch file: each ``*.pkl`` member of a zip (read alone: the storages
    are never read), else the stream itself (a legacy file, read as far as its pickles go)."""
    fh = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    if fh.read(4) != b"PK\x03\x04":
        fh.seek(0)
        return [fh]
    fh.seek(0)
    with fh, zipfile.ZipFile(fh) as z:
        return [io.BytesIO(z.read(i)) for i in z.infolist() if i.filename.endswith(".pkl")]


def check_allocations(source: Path | bytes, what: str) -> None:
    """InputError when the pickles of ``source`` (a torch file's path or bytes) could allocate
    more than the read budget through an allowlisted allocator (see the module docstring).
    A file whose pickles do not parse is left to its reader, which says what is wrong."""
    try:
        streams = _pickles(source)
    except (zipfile.BadZipFile, ValueError, EOFError, OSError):
        return
    bound, calls, largest = 0, 0, 0  # each pickle has its own memo: bounds add up
    for stream in streams:
        with stream:
            for _ in range(_LEGACY_PICKLES if len(streams) == 1 else 1):
                try:
                    named, c, big = _scan(stream)
                except Exception:  # noqa: BLE001 (not a pickle from here on: raw storage bytes)
                    break
                if named:
                    bound, calls, largest = bound + c * big, calls + c, max(largest, big)
    if bound > read_budget():
        size = f"{largest:.3g}" if largest < 10**300 else short(largest)
        raise InputError(
            f"{what} refused: its pickle calls bytearray and could allocate up to "
            f"{human(bound) if bound < 10**300 else 'more bytes than exist'} ({calls} calls, "
            f"integers up to {size}), over the read budget of {human(read_budget())} (nothing "
            f"was loaded; set {READ_BUDGET_ENV} to raise it)"
        )
