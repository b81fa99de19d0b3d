"""Reading torch pickles without running any code.

``torch.load(weights_only=True)`` first: torch's own allowlist, the default for every file.
When torch refuses a file only because it names globals outside that allowlist (a Lightning
``.ckpt`` whose ``hyper_parameters`` hold a ``functools.partial``, an ``nn.MSELoss``, an
``argparse.Namespace``; a pickled ``TrainingArguments``), the file is read once more by
torch's same weights-only unpickler, with each such global (found statically by
:func:`torch.serialization.get_unsafe_globals_in_checkpoint`, which disassembles the pickle
and imports nothing) mapped to an inert placeholder class of our own:

- the real global is never imported, called or given state; the placeholder's constructor and
  ``__setstate__`` only record their arguments;
- torch still refuses modules it blocks outright (``os``, ``posix``, ``sys``, ``nt``), so a
  payload calling ``os.system`` is refused, and any other payload (``eval``, ``subprocess``)
  becomes an inert object: nothing runs either way;
- the caller keeps only plain tensors from the result (see :mod:`.select`) and names every
  replaced object and where it sat (:func:`find_inert`);
- torch's own rebuild functions let a pickle give a tensor attributes (``_rebuild_parameter_
  with_state``, ``_rebuild_from_type_v2``): one named ``item`` or ``to`` shadows the method
  for whoever reads the tensor, and backward hooks ride along. :func:`strip_tensors` drops
  them from every tensor of the result; :func:`tensor_kind` names tensors that hold no dense
  CPU data (meta, sparse, quantized), which a reader refuses instead of crashing on them.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.serialization as ts

from alignctl.errors import InputError
from alignctl.runs.pickle_scan import check_allocations

_BLOCKED = ("os.", "posix.", "nt.", "sys.")
_UNSUPPORTED = re.compile(r"GLOBAL (\S+) was not an allowed global")
_MAX_ROUNDS = 3  # globals torch's static scan misses are added from the error, this often
_MAX_WALK = 10_000  # objects visited when locating placeholders


class Inert:
    """Stands for a global the pickle named; records what it was given, does nothing."""

    _global = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<inert {self._global}>"


_CLASSES: dict[str, type] = {}


def _inert_class(name: str) -> type:
    if name not in _CLASSES:
        label = re.sub(r"\W", "_", name)
        _CLASSES[name] = type(f"Inert_{label}", (Inert,), {"_global": name})
    return _CLASSES[name]


def _plain_load(path: Path, mmap: bool) -> Any:
    check_allocations(path, str(path))  # bytearray(2**34) is on torch's allowlist
    with warnings.catch_warnings():
        # torch warns about pickle protocols it merely tolerates; the library never prints.
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _refused_globals(e: Exception) -> bool:
    text = str(e)
    return "weights only" in text.lower() or "weights_only" in text or "GLOBAL" in text


def torch_load(path: Path, *, mmap: bool = False) -> tuple[Any, list[str]]:
    """(object, globals replaced by placeholders). Raises what torch raises on a corrupt file,
    and InputError for a pickle that calls into a module torch blocks (``os.system``...) or
    for a TorchScript archive (a program, not a state dict)."""
    _refuse_torchscript(path)
    try:
        return strip_tensors(_plain_load(path, mmap)), []
    except Exception as e:
        if not _refused_globals(e):
            raise
        first = e
    try:
        names = set(ts.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:
        raise first from None  # not a zip torch file (legacy format): torch's refusal stands
    for _ in range(_MAX_ROUNDS):
        blocked = sorted(n for n in names if n.startswith(_BLOCKED))
        if blocked:
            raise InputError(
                f"{path} refused: not a plain weights file: its pickle calls {blocked[0]}, "
                "which would run code on a plain torch.load (nothing was executed)"
            )
        try:
            with ts.safe_globals([(_inert_class(n), n) for n in sorted(names)]):
                return strip_tensors(_plain_load(path, mmap)), sorted(names)
        except Exception as e:
            found = _UNSUPPORTED.search(str(e))
            if not found or found.group(1) in names:
                raise
            names.add(found.group(1))
    raise first


EXPORTED = (
    "is a torch.export archive (torch.export.save: a program, not a state dict); alignctl "
    "reads weights: save them with torch.save(model.state_dict(), path)"
)


def strip_tensors(obj: Any) -> Any:
    """``obj`` with every tensor in its dicts, lists and tuples stripped of what the pickle
    attached to it: instance attributes (which shadow methods: ``t.item``) and backward hooks.
    Each object is visited once (a pickle's memo can share one list a billion ways)."""
    todo, seen = [obj], set()
    while todo:
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, torch.Tensor):
            vars(x).clear()  # now no attribute shadows a method
            if x._backward_hooks is not None:  # a data descriptor: never shadowed
                x._backward_hooks = None
        elif isinstance(x, dict):
            todo += x.values()
        elif isinstance(x, (list, tuple)):
            todo += x
    return obj


def tensor_kind(t: torch.Tensor) -> str | None:
    """Why ``t`` holds no dense CPU data a model can load (``"a meta tensor (no data)"``);
    None for a plain tensor."""
    if t.is_meta:
        return "a meta tensor (no data)"
    if t.layout != torch.strided:
        return f"a {str(t.layout).removeprefix('torch.')} tensor (re-save it with .to_dense())"
    if t.is_quantized:
        return "a quantized tensor (re-save it with .dequantize())"
    if t.is_nested or t.device.type != "cpu":
        return f"a {'nested' if t.is_nested else t.device.type} tensor"
    return None


def _refuse_torchscript(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return
    if any(n.endswith("/archive_format") for n in names) and not any(
        n.endswith("data.pkl") for n in names
    ):
        raise InputError(f"{path} {EXPORTED}")
    if any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in names):
        raise InputError(
            f"{path} is a TorchScript archive (torch.jit.save), not a state dict; alignctl "
            "reads weights: save them with torch.save(model.state_dict(), path)"
        )


def find_inert(obj: Any, where: str = "") -> list[tuple[str, str]]:
    """(location, global) of every placeholder in ``obj`` (dicts, lists, tuples), e.g.
    ``("hyper_parameters['loss']", "functools.partial")``; bounded walk."""
    found: list[tuple[str, str]] = []
    todo = [(where, obj)]
    seen = 0
    while todo and seen < _MAX_WALK:
        loc, x = todo.pop()
        seen += 1
        if isinstance(x, Inert):
            found.append((loc or "the top level", x._global))
        elif isinstance(x, dict):
            todo += [(f"{loc}[{k!r}]" if loc else str(k), v) for k, v in reversed(x.items())]
        elif isinstance(x, (list, tuple)):
            todo += [(f"{loc}[{i}]", v) for i, v in reversed(list(enumerate(x)))]
    return found


def pickled_module(obj: Any) -> str | None:
    """The class name when ``obj`` is a whole pickled ``nn.Module`` (``torch.save(model)``)."""
    if not isinstance(obj, Inert):
        return None
    state = obj.__dict__.get("_state")
    if isinstance(state, dict) and ("_modules" in state or "_parameters" in state):
        return obj._global
    return None


_NUMBER_CODE = re.compile(r"[biuf][1248]")  # numpy dtype codes of bools, ints and floats


def numpy_scalar(obj: Any) -> bool | int | float | None:
    """The value of a pickled numpy scalar (``np.int64(42)``, a loop's step counter), decoded
    from the bytes its placeholder recorded: the numpy global is never called; only dtypes of
    bools, integers and floats are read. None for anything else."""
    if not isinstance(obj, Inert) or not obj._global.endswith("multiarray.scalar"):
        return None
    args = obj.__dict__.get("_args", ())
    if len(args) != 2 or not isinstance(args[0], Inert) or not isinstance(args[1], bytes):
        return None
    dtype_args, state = args[0].__dict__.get("_args", ()), args[0].__dict__.get("_state")
    code = dtype_args[0] if dtype_args and isinstance(dtype_args[0], str) else ""
    order = state[1] if isinstance(state, tuple) and len(state) > 1 else "|"
    if args[0]._global != "numpy.dtype" or not _NUMBER_CODE.fullmatch(code):
        return None
    import numpy as np

    dtype = np.dtype((order if order in "<>" else "=") + code)
    if len(args[1]) != dtype.itemsize:
        return None
    return np.frombuffer(args[1], dtype=dtype)[0].item()


def numpy_array(obj: Any) -> bool:
    """Whether ``obj`` is the placeholder of a pickled numpy array (never rebuilt)."""
    return isinstance(obj, Inert) and obj._global.endswith("multiarray._reconstruct")


def describe(obj: Any) -> str:
    """A short name for what a top-level object is (for 'holds no state dict' messages)."""
    if isinstance(obj, Inert):
        return f"a pickled {obj._global} object (never executed)"
    return f"a {type(obj).__name__}"
