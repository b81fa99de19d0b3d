"""The ``.metadata`` file of a ``torch.distributed.checkpoint`` (DCP) folder, read without
running code, and checked against the shard files before any tensor is read.

DCP's ``.metadata`` is a plain pickle, and torch's own ``FileSystemReader.read_metadata``
reads it with ``pickle.load``, which runs whatever the pickle calls: it is never used here.
:class:`_MetadataUnpickler` (the standard library's pure-Python unpickler) resolves only the
globals DCP metadata is made of: the dataclasses of ``torch.distributed.checkpoint.metadata``
(and ``filesystem._StorageInfo``; older torch's ``_shard.sharded_tensor.metadata``), ``torch``
dtypes and ``Size``, ``torch.serialization._get_layout`` (a table lookup) and ``pathlib``
paths. Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``) is refused
before it is imported; ``BUILD`` may set the state of instances of those classes only, never
of a class itself (which would patch it). Calling an allowed global only constructs a
dataclass, a ``Size``, a path or an enum member.

:func:`read_dcp_metadata` then checks the result's shape (a ``Metadata`` with string keys,
tensor or bytes entries, shard entries naming plain file names inside the folder) and that
every shard it names exists and holds the bytes it places there: a missing or truncated
``__1_0.distcp`` is one InputError before anything is read. The instances come from an
untrusted pickle (built by ``NEWOBJ`` without ``__init__``, their fields set by ``BUILD``), so
each field is checked for its type before use, a tensor's size must be counts whose product
fits 64 bits and whose bytes fit the read budget (its tensor is allocated from the size), and
messages show a key by :func:`alignctl.errors.short` (a key may be a tuple nested 100,000
deep or two million long).
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from alignctl.errors import InputError, short
from alignctl.runs.limits import READ_BUDGET_ENV, check_budget, human, read_budget, regular_size

METADATA = ".metadata"
_CKPT = "torch.distributed.checkpoint."
_ALLOWED = {
    _CKPT + "metadata": {
        "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
        "BytesStorageMetadata", "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING",
    },
    _CKPT + "filesystem": {"_StorageInfo"},
    "torch.distributed._shard.sharded_tensor.metadata": {"TensorProperties",
                                                         "MEM_FORMAT_ENCODING"},
    "torch.serialization": {"_get_layout"},
    "pathlib": {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath", "Path"},
}  # fmt: skip


class _MetadataUnpickler(pickle._Unpickler):  # the pure-Python one: BUILD can be guarded
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None),
                                                               torch.dtype)):  # fmt: skip
            return getattr(torch, name)
        if name not in _ALLOWED.get(module, ()):
            raise pickle.UnpicklingError(f"{module}.{name}")
        import importlib

        return getattr(importlib.import_module(module), name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("a persistent id")

    def _build(self) -> None:
        target = self.stack[-2]
        if isinstance(target, type) or type(target).__module__ not in _ALLOWED:
            raise pickle.UnpicklingError(f"BUILD on {type(target).__name__}")
        pickle._Unpickler.load_build(self)

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _build


def _refuse(folder: Path, why: str) -> InputError:
    return InputError(f"cannot read DCP checkpoint {folder}: {why}")


def _unpickle(folder: Path) -> Any:
    path = folder / METADATA
    check_budget(path, "DCP metadata")
    try:
        with open(path, "rb") as fh:
            return _MetadataUnpickler(fh).load()
    except pickle.UnpicklingError as e:
        text = str(e)
        if "." in text or text.startswith(("BUILD", "a persistent")):
            raise _refuse(
                folder,
                f"its {METADATA} pickle names {text}, which DCP metadata never holds: refused "
                "(nothing was executed)",
            ) from None
        raise _refuse(folder, f"corrupt {METADATA} ({text})") from None
    except OSError as e:
        raise _refuse(folder, f"{METADATA}: {e.strerror or e}") from None
    except Exception as e:  # a truncated or garbled pickle: EOFError, ValueError, TypeError...
        why = (str(e).splitlines() or [""])[0] or type(e).__name__
        raise _refuse(folder, f"corrupt {METADATA} ({why})") from None


def _plain_name(name: Any) -> bool:
    if not isinstance(name, str) or not name or "\\" in name or ":" in name:
        return False
    parts = PurePosixPath(name).parts
    return len(parts) == 1 and parts[0] not in (".", "..") and not name.startswith("/")


def read_dcp_metadata(folder: Path):
    """The DCP ``Metadata`` of ``folder``, read without running code (see the module), with
    every shard it names present and long enough; InputError otherwise."""
    try:
        from torch.distributed.checkpoint import metadata as md
        from torch.distributed.checkpoint.filesystem import _StorageInfo
    except ImportError:
        raise _refuse(folder, "this torch build has no torch.distributed") from None
    meta = _unpickle(folder)
    entries = getattr(meta, "state_dict_metadata", None)
    if not isinstance(meta, md.Metadata) or not isinstance(entries, dict):
        raise _refuse(folder, f"{METADATA} does not hold DCP metadata")
    storage = getattr(meta, "storage_data", None)
    if not isinstance(storage, dict):
        raise _refuse(folder, f"{METADATA} records no storage (not written by a FileSystemWriter)")
    for fqn, entry in entries.items():
        if not isinstance(fqn, str):
            raise _refuse(folder, f"{METADATA} has a key that is not a string ({short(fqn)})")
        if isinstance(entry, md.TensorStorageMetadata):
            _tensor_bytes(folder, fqn, entry)
        elif not isinstance(entry, md.BytesStorageMetadata):
            raise _refuse(folder, f"{METADATA} entry {short(fqn)} is a {type(entry).__name__}")
    ends: dict[str, int] = {}
    for index, info in storage.items():
        if not isinstance(index, md.MetadataIndex) or not isinstance(info, _StorageInfo):
            raise _refuse(folder, f"{METADATA} has a malformed storage entry")
        if not isinstance(getattr(index, "fqn", None), str):
            raise _refuse(folder, f"{METADATA} has a storage entry without a key")
        name = getattr(info, "relative_path", None)
        if not _plain_name(name):
            raise _refuse(
                folder, f"{METADATA} places data in {short(name)}, outside its folder: refused"
            )
        offset, length = getattr(info, "offset", None), getattr(info, "length", None)
        if not all(isinstance(v, int) and v >= 0 for v in (offset, length)):
            raise _refuse(folder, f"{METADATA} has a negative or non-integer offset")
        ends[name] = max(ends.get(name, 0), offset + length)
    for name, end in sorted(ends.items()):
        shard = folder / name
        if not shard.exists():
            raise _refuse(folder, f"shard {name} named in {METADATA} is missing")
        size = regular_size(shard, "DCP shard")
        if size < end:
            raise _refuse(
                folder,
                f"shard {name} is truncated ({METADATA} places data up to byte {end}; the file "
                f"has {size})",
            )
    return meta


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _tensor_bytes(folder: Path, fqn: str, entry) -> int:
    """Bytes of the tensor ``entry`` declares (its dtype and a size of counts that fits 64
    bits); InputError else: the tensor is allocated from these before any data is read."""
    dtype = getattr(getattr(entry, "properties", None), "dtype", None)
    size = getattr(entry, "size", None)
    if not isinstance(dtype, torch.dtype) or not isinstance(size, torch.Size):
        raise _refuse(folder, f"{METADATA} entry {short(fqn)} has no dtype or size")
    if not all(map(_count, size)) or math.prod(size) >= 2**63 // 16:
        raise _refuse(folder, f"{METADATA} entry {short(fqn)} has an impossible size {short(size)}")
    return math.prod(size) * dtype.itemsize


def check_allocation(folder: Path, meta, fqns) -> None:
    """InputError when the tensors ``fqns`` of ``meta`` (checked by :func:`read_dcp_metadata`)
    need more bytes than the read budget: what :func:`.dcp.read_dcp` allocates."""
    declared = sum(_tensor_bytes(folder, f, meta.state_dict_metadata[f]) for f in fqns)
    budget = read_budget()
    if declared > budget:
        raise _refuse(
            folder,
            f"{METADATA} declares {human(declared)} of weights, over the read budget of "
            f"{human(budget)} (set {READ_BUDGET_ENV} to raise it)",
        )


def storage_entries(meta, fqn: str) -> list:
    """The ``_StorageInfo`` entries holding item ``fqn`` (one per saved chunk)."""
    return [info for index, info in meta.storage_data.items() if index.fqn == fqn]


__all__ = ["METADATA", "check_allocation", "read_dcp_metadata", "storage_entries"]
