"""Integer inputs a model cannot take, named before torch's own message hides the cause.

Two failures whose torch messages point away from the data:

- an ``nn.Embedding`` (or ``nn.EmbeddingBag``) given an index outside ``[0, rows)``: token ids
  beyond the vocabulary, or sequences longer than a position table. torch says ``index out
  of range in self`` (on CUDA a device-side assert that ends the process's CUDA context), and
  when the tokens are the first two samples alignctl uses to recognise token models, the
  model's failure there made the integers look like continuous data, so the error became
  ``Expected ... Long, Int; but got torch.FloatTensor``. :func:`checked` checks every
  embedding's indices in a forward pre-hook (one ``aminmax`` per embedding call) and raises
  an :class:`InputError` naming the embedding, its number of rows and the offending index.
- a model that reads integers without an embedding (``F.one_hot(x)``, ``table[x]``): its
  inputs are cast to floats, which it rejects (``one_hot is only applicable to index tensor
  of type LongTensor``). :func:`explain_integer_failure` runs it once on the integers, and when
  that works, says the model must implement the token protocol.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from alignctl.errors import InputError, first_line

EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)

PROTOCOL = (
    "implement embed(tokens) and forward_embedded(e) on the model to say where its Jacobian "
    "is taken (README, Python API)"
)


def embeddings(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every embedding of ``model``, in module order."""
    return [
        (name or "(the model)", m) for name, m in model.named_modules() if isinstance(m, EMBEDDINGS)
    ]


def _is_tokens(idx: torch.Tensor, tokens: torch.Tensor | None) -> bool:
    if tokens is None or idx.shape != tokens.shape or idx.device != tokens.device:
        return False
    return idx.untyped_storage().data_ptr() == tokens.untyped_storage().data_ptr() or bool(
        torch.equal(idx, tokens.to(idx.dtype))
    )


def check_index(name: str, mod: nn.Module, idx, tokens: torch.Tensor | None = None) -> None:
    """InputError when the index tensor ``idx`` an embedding ``mod`` (called ``name``) receives
    is not integer or lies outside [0, rows); ``tokens``: the model's raw inputs, to say
    whether the indices are the token ids themselves or computed by the model."""
    if not isinstance(idx, torch.Tensor):
        return
    rows = mod.num_embeddings
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise InputError(
            f"the model's embedding {name} was given {str(idx.dtype).removeprefix('torch.')} "
            f"values, not integer ids: store token ids as integers (int64) in the data"
        )
    if idx.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(idx.detach()))
    if 0 <= lo and hi < rows:
        return
    bad = lo if lo < 0 else hi
    if _is_tokens(idx, tokens):
        raise InputError(
            f"token id {bad} is out of range for the model's embedding {name}, which has "
            f"{rows} rows (ids 0..{rows - 1})"
        )
    shape = (
        f" from inputs of shape {tuple(tokens.shape[1:])} a sample" if tokens is not None else ""
    )
    raise InputError(
        f"the model's embedding {name} has {rows} rows (indices 0..{rows - 1}) but was given "
        f"index {bad}, which the model computed{shape} (e.g. positions: a sequence longer "
        f"than the model has positions for)"
    )


@contextmanager
def checked(model: nn.Module, tokens: torch.Tensor | None = None, found=None):
    """Within: every embedding of ``model`` checks its indices (:func:`check_index`) before
    it runs. ``found``: :func:`embeddings`' result when the caller has it already. The hooks
    are removed on exit; a model without embeddings gets none."""
    mods = embeddings(model) if found is None else found
    handles = []
    for name, mod in mods:

        def hook(m, args, name=name):
            if args:
                check_index(name, m, args[0], tokens)

        handles.append(mod.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def explain_integer_failure(model: nn.Module, tokens: torch.Tensor, error: Exception, dtype):
    """An InputError for a model that failed (``error``) on integer data given to it as floats
    (``dtype``), run again on their first two samples both ways: when it runs on the
    integers, it reads them without an embedding (``F.one_hot``, indexing) and must implement
    the token protocol; when it fails both ways, both errors are named (the integer one is
    often the real problem, e.g. ids beyond ``one_hot``'s classes). None when it runs as
    floats there (the error is the later samples'), or fails alike both ways: it stands."""
    if isinstance(error, InputError) or tokens.is_floating_point() or tokens.dtype == torch.bool:
        return None
    device = next((p.device for p in model.parameters()), tokens.device)
    two = tokens[:2].to(device)
    try:
        with torch.no_grad():
            model(two.to(dtype))
        return None
    except Exception as e:  # noqa: BLE001 (the failure this explains)
        as_float = first_line(e)
    try:
        with torch.no_grad(), checked(model, two):
            model(two.clone())
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 (it fails on the integers too: both are named)
        if first_line(e) == as_float:  # the same failure: not the dtype's (the error stands)
            return None
        return InputError(
            f"the model fails on its integer inputs ({str(tokens.dtype).removeprefix('torch.')})"
            f" given as floats ({as_float}) and as they are ({first_line(e)})"
        )
    return InputError(
        f"the model reads its integer inputs without an nn.Embedding (it runs on them as "
        f"integers; alignctl differentiates with respect to floats, which it rejects: "
        f"{as_float}); {PROTOCOL}"
    )
