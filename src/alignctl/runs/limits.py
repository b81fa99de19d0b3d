"""What alignctl reads before it trusts a file: only regular files, and no more bytes than a
documented budget allows (docs/config.md, "Reading limits").

- Only regular files are opened: a FIFO would block forever, a device (``/dev/zero``) never
  ends; both are refused by ``stat`` before any ``open``.
- Small text files (``alignctl.yaml``, shard indexes, ``trainer_state.json``) are refused
  above :data:`MAX_TEXT_BYTES` before they are read (a sparse 64 GiB file costs nothing).
- Weights and data files are refused above the read budget: ``ALIGNCTL_MAX_READ_BYTES``
  (bytes), default the machine's physical memory.
- Zip containers (torch ``.pt``, ``.npz``) are checked from their central directory before
  anything is inflated: a member may not declare more than the read budget, and compressed
  members together may inflate at most :data:`MAX_INFLATE_RATIO` times their stored size
  beyond :data:`FREE_INFLATE_BYTES` (a zip bomb inflates ~1000x).
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

from alignctl.errors import InputError, short

MAX_TEXT_BYTES = 16 * 2**20  # alignctl.yaml, *.index.json, trainer_state.json
MAX_INFLATE_RATIO = 200  # savez_compressed of real data: ~1-20x; a deflate bomb: ~1000x
FREE_INFLATE_BYTES = 64 * 2**20  # below this, any ratio (tiny arrays of zeros are fine)
READ_BUDGET_ENV = "ALIGNCTL_MAX_READ_BYTES"

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def read_budget() -> int:
    """Bytes a weights or data file may hold: ``$ALIGNCTL_MAX_READ_BYTES``, else physical RAM."""
    raw = os.environ.get(READ_BUDGET_ENV)
    if raw:
        try:
            value = int(float(raw))
        except (ValueError, OverflowError):  # "abc", or 1e400 (inf) / nan
            raise InputError(
                f"{READ_BUDGET_ENV} must be a number of bytes, got {short(raw)}"
            ) from None
        if value < 1:
            raise InputError(f"{READ_BUDGET_ENV} must be positive, got {short(raw)}")
        return value
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: no cap beyond the OS's
        return 2**62


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            whole = unit == "B" or float(n).is_integer()  # "1 MiB", "1.7 MiB"
            return f"{n:.0f} {unit}" if whole else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def kind_of(st_mode: int) -> str | None:
    """What a non-regular file is (``"a FIFO (named pipe)"`` ...); None for a regular file."""
    for test, name in _KINDS:
        if test(st_mode):
            return name
    return None if stat.S_ISREG(st_mode) else "not a regular file"


def regular_size(path: Path, what: str) -> int:
    """The size of ``path``, which must be a regular file (symlinks followed); InputError else."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror or e}") from None
    kind = kind_of(st.st_mode)
    if kind is not None:
        raise InputError(f"{what} {path} is {kind}, not a regular file")
    return st.st_size


def check_budget(path: Path, what: str) -> int:
    """``regular_size`` capped by :func:`read_budget`."""
    size = regular_size(path, what)
    budget = read_budget()
    if size > budget:
        raise InputError(
            f"{what} {path} is {human(size)}, over the read budget of {human(budget)} "
            f"(set {READ_BUDGET_ENV} to raise it)"
        )
    return size


def read_text_capped(path: Path, what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """A small UTF-8 text file, refused before reading when larger than ``limit``."""
    size = regular_size(path, what)
    if size > limit:
        raise InputError(f"{what} {path} is {human(size)}, more than the {human(limit)} allowed")
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{what} {path} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror or e}") from None


class UnreadableZip(InputError):
    """A file that starts as a zip but whose directory cannot be parsed (corrupt, truncated,
    still being written, or made for a lenient reader): :func:`check_zip` refuses it."""


def expand_user(text: str) -> Path:
    """``Path(text).expanduser()``; ``~nosuchuser/x`` is an InputError (pathlib raises a
    RuntimeError: "Could not determine home directory")."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise InputError(f"cannot expand {text!r}: no such user's home folder") from None


def as_path(value, name: str) -> Path:
    """``value`` (a str or os.PathLike) as a Path; anything else (None, a number) is an
    InputError naming the argument, not pathlib's TypeError."""
    import os

    if isinstance(value, str | os.PathLike) and not isinstance(value, bytes):
        return Path(value)
    raise InputError(f"{name} must be a path (str or pathlib.Path), not {type(value).__name__}")


class HugeInteger(ValueError):
    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))
        super().__init__(f"a JSON integer of {self.digits} digits, beyond the float range")
        self.text = text


def json_int(text: str) -> int:
    """A JSON integer that a float can hold (Python's ints are unbounded, and one beyond
    ~1.8e308 raises OverflowError wherever it is compared or formatted as a number)."""
    try:
        value = int(text)
        float(value)
    except (OverflowError, ValueError):  # ValueError: past int()'s 4,300-digit limit
        raise HugeInteger(text) from None
    return value


def loads_json(text: str | bytes, **kwargs):
    """``json.loads`` for files alignctl did not write. Nesting deeper than Python's recursion
    limit (``[[[...]]]`` 100,000 deep) and an integer beyond the float range are each a
    :class:`json.JSONDecodeError` (a ValueError), as any other malformed JSON, not a
    RecursionError or OverflowError that no caller expects."""
    kwargs.setdefault("parse_int", json_int)
    try:
        return json.loads(text, **kwargs)
    except RecursionError:
        doc = text if isinstance(text, str) else ""
        raise json.JSONDecodeError("nested too deeply", doc, 0) from None
    except HugeInteger as e:
        doc = text if isinstance(text, str) else text.decode(json.detect_encoding(text), "replace")
        at = max(doc.find(e.text), 0)
        raise json.JSONDecodeError(str(e), doc, at) from None


def check_zip(path: Path, what: str) -> None:
    """Refuse a zip whose members declare more than the budget, or inflate past the ratio.

    Reads only the central directory (at the end of the file). A file that does not start as
    a zip (a legacy torch pickle, a ``.npy``) is left to its reader. One that does (torch and
    NumPy then read it as a zip) but whose directory :mod:`zipfile` cannot parse is refused:
    torch's reader is more lenient (a zip64 locator naming another disk, a broken zip64
    record), so leaving it to the reader let a bomb inflate unchecked.
    """
    size = check_budget(path, what)
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except OSError as e:  # mode 000: as the reader would say, on one line
        raise InputError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        with open(path, "rb") as fh:
            if fh.read(4) != b"PK\x03\x04":
                return
        raise UnreadableZip(f"{what} {path}: its zip directory cannot be read ({e})") from None
    budget = read_budget()
    declared = sum(i.file_size for i in infos)
    packed = [i for i in infos if i.compress_type != zipfile.ZIP_STORED]
    inflated = sum(i.file_size for i in packed)
    stored = sum(i.compress_size for i in packed)
    plain = [i for i in infos if i.compress_type == zipfile.ZIP_STORED]
    if declared > budget:
        raise InputError(
            f"{what} {path} declares {human(declared)} uncompressed in a {human(size)} file, "
            f"over the read budget of {human(budget)} (set {READ_BUDGET_ENV} to raise it)"
        )
    if inflated > FREE_INFLATE_BYTES and inflated > MAX_INFLATE_RATIO * max(stored, 1):
        raise InputError(
            f"{what} {path} declares {human(inflated)} uncompressed in {human(size)} "
            f"(over {MAX_INFLATE_RATIO}x: a zip bomb?); save it uncompressed "
            "(np.savez, torch.save) if it is real"
        )
    if any(i.file_size != i.compress_size for i in plain) or declared - inflated > size:
        raise InputError(f"{what} {path}: its zip directory declares sizes the file does not hold")
