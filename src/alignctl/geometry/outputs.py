"""Which part of a model's output is the logits: one rule for measuring, predicting, attacking
and training.

Models return more than a tensor: ``(logits, features)`` tuples, dicts with a ``logits`` key,
Hugging Face ``ModelOutput`` objects (``.logits``), namedtuples. The conventions, in order:

- a tensor is the logits;
- a mapping (dict, ``ModelOutput``): its ``logits`` entry;
- an object with a ``logits`` attribute (``ModelOutput``, dataclasses, namedtuples): that;
- a tuple or list: its first tensor.

``spec`` (config ``model: {output: KEY}``, CLI ``--output KEY``) overrides them: a key or
attribute name, or an index into a tuple/list (an integer, or digits as a string). Anything
else is an :class:`InputError` naming what the model returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from alignctl.errors import InputError, short

HOW = "choose one with --output KEY or `model: {output: KEY}` in alignctl.yaml"


def check_spec(spec) -> str | int | None:
    """Normalise an output spec: None, a non-negative index or a key; InputError otherwise."""
    if spec is None:
        return None
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 0:
            raise InputError(f"output index must be >= 0, not {short(spec)}")
        return spec
    if isinstance(spec, str) and spec.strip():
        s = spec.strip()
        return int(s) if s.isdigit() else s
    raise InputError(f"output must be a key or an index, not {short(spec)}")


def _describe(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"tensor {'x'.join(map(str, v.shape)) or 'scalar'}"
    return type(v).__name__


def describe(out) -> str:
    """One line saying what a model returned (keys, fields or elements, with shapes)."""
    if isinstance(out, Mapping):
        items = [f"{k} ({_describe(v)})" for k, v in list(out.items())[:8]]
        kind = type(out).__name__
        return f"a {kind} with keys {', '.join(items) or '(none)'}"
    if isinstance(out, tuple) and hasattr(out, "_fields"):
        items = [f"{k} ({_describe(getattr(out, k))})" for k in out._fields[:8]]
        return f"a {type(out).__name__} with fields {', '.join(items)}"
    if isinstance(out, Sequence) and not isinstance(out, str):
        items = [f"[{i}] {_describe(v)}" for i, v in enumerate(list(out)[:8])]
        return f"a {type(out).__name__} of {len(out)}: {', '.join(items) or '(empty)'}"
    return f"a {type(out).__name__}"


def _by_spec(out, spec):
    if isinstance(spec, int):
        if isinstance(out, Sequence) and not isinstance(out, str) and spec < len(out):
            return out[spec]
        to_tuple = getattr(out, "to_tuple", None)  # ModelOutput: its non-None values in order
        if callable(to_tuple) and spec < len(to_tuple()):
            return to_tuple()[spec]
    else:
        if isinstance(out, Mapping) and spec in out:
            return out[spec]
        if not isinstance(out, Mapping) and hasattr(type(out), "__dict__"):
            value = getattr(out, spec, None)
            if value is not None and not callable(value):
                return value
    raise InputError(f"the model returned {describe(out)}: no output {short(spec)}; {HOW}")


def _by_convention(out):
    if isinstance(out, Mapping):
        if out.get("logits") is not None:
            return out["logits"]
        raise InputError(f"the model returned {describe(out)} and none is 'logits'; {HOW}")
    value = getattr(out, "logits", None)
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(out, Sequence) and not isinstance(out, str):
        for v in out:
            if isinstance(v, torch.Tensor):
                return v
    raise InputError(f"the model returned {describe(out)}, not a tensor of logits; {HOW}")


def ambiguous(out, spec=None) -> str | None:
    """A note when the convention chose among several candidates: no ``spec`` and a plain
    tuple or list (no ``logits`` field) holding more than one tensor with the chosen one's
    number of rows, as ``(features, logits)`` does; None otherwise. The first tensor is taken
    by convention; features taken for logits would give wrong numbers silently, so the choice
    is said."""
    if spec is not None or isinstance(out, (torch.Tensor, str, Mapping)):
        return None
    if not isinstance(out, Sequence) or isinstance(getattr(out, "logits", None), torch.Tensor):
        return None
    tensors = [v for v in out if isinstance(v, torch.Tensor) and v.dim() >= 1]
    if len(tensors) < 2 or sum(t.shape[0] == tensors[0].shape[0] for t in tensors) < 2:
        return None
    first = next(i for i, v in enumerate(out) if v is tensors[0])
    rows = lambda v: ", ".join(["n", *map(str, v.shape[1:])])  # noqa: E731 (any batch size)
    items = [f"[{i}] " + (f"({rows(v)})" if v is not None and any(v is t for t in tensors)
                          else type(v).__name__) for i, v in enumerate(list(out)[:8])]  # fmt: skip
    return (f"the model returned a {type(out).__name__} of {len(out)} ({', '.join(items)}): "
            f"element {first} taken as the logits (the first tensor, by convention); if "
            f"another one is, {HOW}")  # fmt: skip


def select_output(out, spec=None) -> torch.Tensor:
    """The logits tensor of a model's output ``out`` (see the module docstring)."""
    if isinstance(out, torch.Tensor):
        if spec is None or spec == "logits":
            return out
        raise InputError(f"output {short(spec)} was asked for, but the model returns one tensor")
    value = _by_convention(out) if spec is None else _by_spec(out, spec)
    if not isinstance(value, torch.Tensor):
        name = "the logits" if spec is None else f"output {short(spec)}"
        raise InputError(f"{name} of the model is a {type(value).__name__}, not a tensor; {HOW}")
    return value
