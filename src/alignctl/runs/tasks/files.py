"""Data files: ``.npz``, ``.safetensors`` or ``.pt`` holding x_train, y_train[, x_test, y_test].

Nothing here can run code: npz is read with ``allow_pickle=False`` and ``.pt`` with
``torch.load(weights_only=True)``. Nothing is read before it is checked: the file must be a
regular file within the read budget, a zip (``.npz``, ``.pt``) may not declare more than the
budget or inflate like a zip bomb, a safetensors header must describe the file's own bytes
(:mod:`alignctl.runs.limits`). Validation of the arrays is :func:`alignctl.tasks.make_dataset`.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch

from alignctl.errors import InputError
from alignctl.runs.limits import check_zip
from alignctl.runs.validate import not_found

DATA_KEYS = ("x_train", "y_train", "x_test", "y_test")
SUFFIXES = (".npz", ".safetensors", ".pt", ".pth")


def _read_npz(path: Path) -> dict:
    out = {}
    with np.load(path, allow_pickle=False) as z:
        for k in z.files:
            try:
                out[k] = z[k]
            except ValueError as e:
                if "allow_pickle" in str(e):
                    raise InputError(
                        f"{path}: array {k!r} is an object array (pickled); save plain numeric "
                        "arrays, e.g. np.savez(f, x_train=x.astype('float32'), ...)"
                    ) from None
                raise
    return out


def _read_pt(path: Path) -> dict:
    from alignctl.runs.checkpoints.safe_unpickle import strip_tensors, tensor_kind
    from alignctl.runs.pickle_scan import check_allocations

    check_allocations(path, str(path))  # bytearray(2**34) is on torch's allowlist
    try:
        obj = strip_tensors(torch.load(path, map_location="cpu", weights_only=True))
    except pickle.UnpicklingError as e:  # torch's text advises weights_only=False: never
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
        if found is None:
            raise  # a corrupt file: reported by read_data_file
        what = f"a pickled {found.group(1)} object"
        raise InputError(
            f"{path} refused: not a plain tensors file: it holds {what} (weights-only "
            "loading; nothing was executed); save a dict of tensors or an .npz"
        ) from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise InputError(f"{path}: entry {k!r} is {type(v).__name__}, not a tensor")
        kind = tensor_kind(v)
        if kind is not None:
            raise InputError(f"{path}: entry {k!r} is {kind}")
    return obj


def read_data_file(path: Path) -> dict:
    """Read the arrays of a data file; returns a dict with the keys present among DATA_KEYS."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{path}: unsupported data file type; use one of {', '.join(SUFFIXES)}")
    if not path.exists():
        raise not_found("data file", path)
    if suffix == ".safetensors":
        from alignctl.runs.checkpoints.formats import safetensors_header

        safetensors_header(path, "data file")
    else:
        check_zip(path, "data file")  # a regular file within budget; no zip bomb
    try:
        if suffix == ".npz":
            arrays = _read_npz(path)
        elif suffix == ".safetensors":
            from safetensors.torch import load_file

            arrays = load_file(str(path))
        else:
            arrays = _read_pt(path)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path}: cannot read data file: {type(e).__name__}: {e}") from e
    unknown = sorted(set(arrays) - set(DATA_KEYS))
    if unknown:
        raise InputError(
            f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(DATA_KEYS)}"
        )
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise InputError(f"{path}: missing {key!r} (found: {', '.join(sorted(arrays))})")
    return arrays
