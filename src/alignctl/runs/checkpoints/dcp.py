"""``torch.distributed.checkpoint`` (DCP) folders: ``.metadata`` plus ``__0_0.distcp``,
``__1_0.distcp``, ... as ``torch.distributed.checkpoint.save`` writes them (FSDP2 and
torchtitan, Lightning's FSDP / ModelParallel strategies with sharded state dicts, a Hugging
Face Trainer's ``pytorch_model_fsdp_0/`` under FSDP ``SHARDED_STATE_DICT``).

The state dict is flattened with dotted keys (``{"model": sd, "optimizer": ...}`` becomes
``model.0.weight``, ``optimizer.state.0.exp_avg``, ...; torchtitan puts the model's keys at the
top level). The metadata is read without running code (:mod:`.dcp_metadata`); its tensor
entries, except the optimizer's (a first name containing ``optim``), become ``meta``
tensors of their dtype and shape, and :func:`.loading.choose_weights` finds the model's keys
by the same rules as for any other checkpoint (under ``model.``, ``state_dict.``, none; an
ambiguity asks for ``--state-key``). Then torch's own ``torch.distributed.checkpoint.load``
(``no_dist``, one process) reads exactly those tensors, reassembling the chunks every rank
saved, straight into the model's parameters and buffers (cast to their dtypes), through a
reader whose ``read_metadata`` returns the metadata read safely. Only tensors are requested:
DCP reads tensors with ``torch.load(weights_only=True)``, but non-tensor ("bytes") items with
a full ``torch.load``, so the planner refuses any bytes item outright.

The step is read from the checkpoint's own small items (``step``, ``train_state.step``,
``epoch``: at most one level deep, never the optimizer's), each unpickled with torch's
weights-only rules, and from Lightning's ``meta.pt`` beside the shards (read by
:mod:`.safe_unpickle`); else from the folder's name or ``trainer_state.json`` (:mod:`.peek`).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

from alignctl.errors import InputError
from alignctl.runs.checkpoints.dcp_metadata import (
    METADATA,
    check_allocation,
    read_dcp_metadata,
    storage_entries,
)
from alignctl.runs.checkpoints.formats import Checkpoint, flat_checkpoint, wrapper_strip
from alignctl.runs.checkpoints.loading import NeedValues, choose_weights
from alignctl.runs.checkpoints.safe_unpickle import torch_load
from alignctl.runs.checkpoints.select import scalar_value
from alignctl.runs.pickle_scan import check_allocations

LIGHTNING_META = "meta.pt"  # Lightning's FSDP strategy: the trainer's state beside the shards
_SMALL = 2**20  # bytes of a step item read at most

__all__ = ["LIGHTNING_META", "dcp_peek", "dcp_step_meta", "is_dcp_folder", "read_dcp", "stream_dcp"]


def is_dcp_folder(folder: Path) -> bool:
    """A folder holding a DCP ``.metadata`` file."""
    return (Path(folder) / METADATA).is_file()


def _optimizer(fqn: str) -> bool:
    return "optim" in fqn.split(".", 1)[0].lower()


def _tensor_items(meta) -> dict:
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    return {
        fqn: entry
        for fqn, entry in meta.state_dict_metadata.items()
        if isinstance(entry, TensorStorageMetadata) and not _optimizer(fqn)
    }


def dcp_peek(folder: Path) -> tuple[dict, str | None]:
    """(step metadata, why the folder holds no model weights: an optimizer's own DCP folder,
    or None)."""
    meta = read_dcp_metadata(folder)
    return dcp_step_meta(folder, meta), _not_weights(meta)


def _not_weights(meta) -> str | None:
    if _tensor_items(meta):
        return None
    if any(_optimizer(k) for k in meta.state_dict_metadata):
        return "an optimizer state (DCP)"
    return "no tensors (DCP)"


def _load(folder: Path, meta, request: dict[str, torch.Tensor]) -> None:
    """``torch.distributed.checkpoint.load`` of the tensors of ``request`` (fqn -> the tensor
    to fill in place), with ``meta`` as the metadata; bytes items refused."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.metadata import StorageMeta

    class Reader(dcp.FileSystemReader):
        def read_metadata(self, *args, **kwargs):  # never torch's pickle.load of the file
            if getattr(meta, "storage_meta", None) is None:
                meta.storage_meta = StorageMeta()
            meta.storage_meta.load_id = self.load_id
            return meta

    class TensorsOnly(DefaultLoadPlanner):
        def load_bytes(self, read_item, value):  # DCP would torch.load it without weights_only
            raise InputError(f"refused to unpickle the non-tensor item {read_item.dest_index.fqn}")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "assuming the intent is to load in a single process"
            dcp.load(request, storage_reader=Reader(str(folder)), planner=TensorsOnly(),
                     no_dist=True)  # fmt: skip
    except CheckpointException as e:
        inner = [exc for exc, _ in e.failures.values()] or [e]
        if isinstance(inner[0], InputError):
            raise inner[0] from None
        raise InputError(f"cannot read DCP checkpoint {folder}: {_why(inner[0])}") from None
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"cannot read DCP checkpoint {folder}: {_why(e)}") from None


def _why(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0].split(". ")[0]
    if "weights only" in text.lower() or "weights_only" in text:
        return "a shard item is not a plain tensor (refused by weights-only loading; nothing ran)"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _meta_tensors(meta):
    """(stripped name -> meta tensor of the entry's dtype and shape, stripped -> fqn)."""
    items = _tensor_items(meta)
    strip = wrapper_strip(items)
    shapes, stored = {}, {}
    for fqn, entry in items.items():
        name = strip(fqn)
        stored[name] = fqn
        shapes[name] = torch.empty(entry.size, dtype=entry.properties.dtype, device="meta")
    return shapes, stored


def read_dcp(folder: Path, weights: str = "raw", state_key: str | None = None) -> Checkpoint:
    """Every tensor of the DCP checkpoint at ``folder`` but the optimizer's, as one state dict
    (fqn keys), with its step metadata; ``state_key`` a prefix, as for a flat state dict."""
    meta = read_dcp_metadata(folder)
    items = _tensor_items(meta)
    check_allocation(folder, meta, items)
    state = {
        fqn: torch.empty(entry.size, dtype=entry.properties.dtype) for fqn, entry in items.items()
    }
    if not state:
        raise InputError(f"DCP checkpoint {folder} holds no tensors outside an optimizer state")
    _load(folder, meta, state)
    return flat_checkpoint(Checkpoint(state, dcp_step_meta(folder, meta)), weights, state_key)


def stream_dcp(model: torch.nn.Module, folder: Path, source: str, *, weights="raw",
               state_key=None):  # fmt: skip
    """Load the DCP checkpoint at ``folder`` into ``model`` in place (no second copy of the
    weights); (metadata, notes), or None when choosing needs the tensors' values."""
    meta = read_dcp_metadata(folder)
    shapes, stored = _meta_tensors(meta)
    if not shapes:
        raise InputError(f"DCP checkpoint {folder} holds no tensors outside an optimizer state")
    mode = "prefix" if state_key is not None else "ema" if weights == "ema" else "raw"
    prefix = state_key.rstrip(".") + "." if state_key is not None else None
    try:
        fit, notes = choose_weights(model, shapes, source, mode=mode, prefix=prefix)
    except NeedValues:
        return None
    target = model.state_dict()
    request: dict[str, torch.Tensor] = {}
    ties = []
    for name, key in fit.source.items():
        fqn = stored[key]
        if fqn in request:  # tied weights stored once: filled from their twin after
            ties.append((name, fqn))
        else:
            request[fqn] = target[name]
    _load(folder, meta, request)
    with torch.no_grad():
        for name, fqn in ties:
            target[name].copy_(request[fqn])
    return dcp_step_meta(folder, meta), notes


def _small_item(folder: Path, meta, fqn: str):
    """The value of one small saved item (an int, a 0-d tensor), unpickled with torch's
    weights-only rules; None when it is not one."""
    entries = storage_entries(meta, fqn)
    if len(entries) != 1 or getattr(entries[0], "transform_descriptors", None):
        return None
    info = entries[0]
    if info.length > _SMALL:
        return None
    try:
        with open(folder / info.relative_path, "rb") as fh:
            fh.seek(info.offset)
            data = fh.read(info.length)
        check_allocations(data, str(folder / info.relative_path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # not a plain value: no step from it
        return None
    return scalar_value(obj)


def dcp_step_meta(folder: Path, meta) -> dict:
    """Step-like values the checkpoint stores: Lightning's ``meta.pt`` (``global_step``,
    ``epoch``), then items named as :data:`.peek.STEP_KEYS` or ``epoch`` at most one level
    deep (``step``, ``train_state.step``; a 0-d tensor only when nested, as a model's own
    buffer named ``step`` sits at the top level), never the optimizer's."""
    from alignctl.runs.checkpoints.peek import EPOCH_KEY, STEP_KEYS  # peek reads through here

    names, out = (*STEP_KEYS, EPOCH_KEY), {}
    beside = folder / LIGHTNING_META
    if beside.is_file():
        try:
            obj, _ = torch_load(beside)
        except Exception:  # unreadable: the name's number stands
            obj = None
        if isinstance(obj, dict):
            out.update({k: s for k, v in obj.items()
                        if isinstance(k, str) and (s := scalar_value(v)) is not None})  # fmt: skip
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    for fqn, entry in meta.state_dict_metadata.items():
        parts = fqn.split(".")
        if len(parts) > 2 or parts[-1] not in names or _optimizer(fqn) or parts[-1] in out:
            continue
        if isinstance(entry, TensorStorageMetadata) and (
            len(parts) == 1 or entry.size.numel() != 1
        ):
            continue
        value = _small_item(folder, meta, fqn)
        if value is not None:
            out[parts[-1]] = value
    return out
