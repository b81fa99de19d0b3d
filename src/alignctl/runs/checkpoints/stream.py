"""Loading a safetensors checkpoint into a model tensor by tensor, never holding a state dict.

The general path (:func:`.formats.read_weights` + :func:`.loading.load_weights`) holds the
file's bytes, the state dict and the model at once: three times the checkpoint. Here the
choice of weights is made from the header alone: every tensor becomes a ``meta`` tensor of
its dtype and shape, and :func:`.loading.choose_weights` applies the very same rules (strict
key matching, shapes, ties and safetensors aliases, wrapper prefixes, EMA copies,
``--state-key`` prefixes) and raises the same errors. Then each chosen tensor is read in
slices of at most :data:`SLICE_BYTES` and copied into the model's own parameter or buffer in
place (cast to its dtype, as ``load_state_dict`` does): peak memory is the model plus one
slice. The bytes are read with ``readinto`` at the offsets of the (checked) header, not with
``safetensors.safe_open``: measured on a 1 GiB checkpoint (``benchmarks/checkpoint_memory.py
--big``), ``safe_open``'s ``pread`` backend reads a whole tensor for every slice (+0.27 of
the file, 7x slower), and a memory map would keep every page it touched resident until
closed (the whole file again).

:func:`stream_checkpoint` returns None (and the caller takes the general path) when the
checkpoint is not one safetensors file (torch pickles, sharded folders; a DCP folder is
loaded by :func:`.dcp.stream_dcp`, into the model's tensors by torch's own reader), when its header
names a dtype this module does not map or sizes that disagree with the shapes (the general
path then names the problem), on a big-endian machine, when a module customises loading
(state-dict hooks, its own ``_load_from_state_dict``, extra state) or when the choice needs
the tensors' values (two identical-looking copies of the weights).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from torch import nn

from alignctl.errors import InputError
from alignctl.runs.checkpoints.formats import (
    hf_main_file,
    parse_metadata,
    safetensors_header,
    wrapper_strip,
)
from alignctl.runs.checkpoints.loading import NeedValues, choose_weights

SLICE_BYTES = 16 * 2**20
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip
_PLAIN_LOADERS = (nn.Module._load_from_state_dict,)


def _file(path: Path) -> Path | None:
    if path.is_dir():
        try:
            path = hf_main_file(path)
        except InputError:
            return None
    return path if path.suffix == ".safetensors" and path.is_file() else None


def _dcp_folder(path: Path) -> Path | None:
    """The DCP folder of a checkpoint folder that is (or holds) one, else None."""
    from alignctl.runs.checkpoints.engines import engine_folder
    from alignctl.runs.checkpoints.formats import HF_FILES

    if not path.is_dir() or any((path / f).is_file() for f in HF_FILES):
        return None
    engine = engine_folder(path)
    return engine[1] if engine is not None and engine[0] == "dcp" else None


def _consistent(info) -> bool:
    if not isinstance(info, dict) or info.get("dtype") not in _DTYPES:
        return False
    try:
        begin, end = info["data_offsets"]
        return end - begin == math.prod(info["shape"]) * _DTYPES[info["dtype"]].itemsize
    except (KeyError, TypeError, ValueError):
        return False


def _plain_loading(model: nn.Module) -> bool:
    """No module changes what load_state_dict does (BatchNorm's override only fills in
    ``num_batches_tracked`` for old checkpoints: matching is strict here, so it never acts)."""
    from torch.nn.modules.batchnorm import _NormBase

    plain = (*_PLAIN_LOADERS, _NormBase._load_from_state_dict)
    for m in model.modules():
        if m._load_state_dict_pre_hooks or m._load_state_dict_post_hooks:
            return False
        if type(m)._load_from_state_dict not in plain:
            return False
        if type(m).get_extra_state is not nn.Module.get_extra_state:
            return False
    return True


def stream_checkpoint(model, ref, *, weights="raw", state_key=None):
    """Load ``ref`` (a safetensors file or a folder with ``model.safetensors``) into ``model``
    in place; returns (metadata, notes), or None where the general path must be taken.
    InputError as :func:`.loading.load_weights` raises it (nothing fits, several copies...)."""
    dcp_folder = _dcp_folder(Path(ref.path))
    if dcp_folder is not None:  # DCP: tensor by tensor into the model, by torch's own reader
        from alignctl.runs.checkpoints.dcp import stream_dcp

        if not _plain_loading(model):
            return None
        return stream_dcp(model, dcp_folder, Path(ref.path).name, weights=weights,
                          state_key=state_key)  # fmt: skip
    path = _file(Path(ref.path))
    if path is None or not _plain_loading(model):
        return None
    header = safetensors_header(path)
    raw_meta = header.pop("__metadata__", None) or {}
    if sys.byteorder != "little" or not all(map(_consistent, header.values())):
        return None
    stored, state = {}, {}
    strip = wrapper_strip(header)
    # In file order, as safetensors.torch.load returns them (the notes list keys in order).
    for key, v in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        name = strip(key)
        stored[name] = key
        state[name] = torch.empty(v["shape"], dtype=_DTYPES[v["dtype"]], device="meta")
    if not state:
        raise InputError(f"checkpoint {path} holds no tensors")
    aliases = {
        strip(k): strip(v)
        for k, v in raw_meta.items()
        if isinstance(v, str) and v in header and k not in header
    }
    # As formats.flat_checkpoint: a plain state dict, so --state-key is a prefix and EMA one too.
    mode = "prefix" if state_key is not None else "ema" if weights == "ema" else "raw"
    prefix = state_key.rstrip(".") + "." if state_key is not None else None
    try:
        fit, notes = choose_weights(model, state, Path(ref.path).name, aliases=aliases,
                                    mode=mode, prefix=prefix)  # fmt: skip
    except NeedValues:
        return None
    _copy(model, path, header, {name: stored[key] for name, key in fit.source.items()})
    return parse_metadata(raw_meta), notes


def _copy(model: nn.Module, path: Path, header: dict, sources: dict[str, str]) -> None:
    """Each tensor's bytes (``data_offsets``, after the header that :func:`safetensors_header`
    checked against the file's size) read in slices of at most :data:`SLICE_BYTES` (of
    elements; of whole rows for a non-contiguous tensor) into one reused buffer, then copied
    into the model's tensor (cast to its dtype)."""
    target = model.state_dict()
    start = path.stat().st_size - max(v["data_offsets"][1] for v in header.values())
    buf = bytearray()
    try:
        with open(path, "rb") as fh, torch.no_grad():
            for name, key in sources.items():
                info, dst = header[key], target[name]
                dtype, (begin, end) = _DTYPES[info["dtype"]], info["data_offsets"]
                # slices of elements of a contiguous tensor (a (1, 10^8) one is one row:
                # read whole, it doubled the peak), else of rows
                rows = dst.view(-1) if dst.is_contiguous() else dst
                row = max(1, (end - begin) // max(1, rows.shape[0]))
                step = max(1, SLICE_BYTES // row)
                fh.seek(start + begin)
                for r in range(0, rows.shape[0], step):
                    part = rows[r : r + step]
                    n = part.numel() * dtype.itemsize
                    if len(buf) < n:
                        buf = bytearray(n)
                    if fh.readinto(memoryview(buf)[:n]) != n:
                        raise OSError("file shorter than its header says")
                    src = torch.frombuffer(buf, dtype=dtype, count=part.numel())
                    part.copy_(src.view(part.shape))
    except OSError as e:
        raise InputError(f"cannot read safetensors file {path}: {e.strerror or e}") from None
