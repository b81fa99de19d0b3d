"""The arguments of :func:`alignctl.measure` and :func:`alignctl.jacobian` checked before any
work, so that a caller's mistake is one :class:`~alignctl.errors.InputError` naming the
argument, not a torch traceback from deep inside a backward pass (or, worse, a number: complex
inputs cast to real lose their imaginary part with only a warning; labels beyond the samples
were never read).

Shared with the integrations' probe (:mod:`alignctl.integrations.probe`) and the data a
factory returns (:mod:`alignctl.runs.tasks`): one rule per kind of argument.
"""

from __future__ import annotations

import operator

import torch

from alignctl.errors import InputError, first_line, short

# dtypes a measurement can run in: the CPU has no half-precision QR/SVD, and 3-4 significant
# digits would make every metric an estimate (a half model is measured as a float32 copy)
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class NotApplicable(InputError):
    """The model's own forward pass failed on the inputs (a shape or dtype it cannot take);
    ``why``: the first line of its exception. Callers that know the inputs by another name
    (the monitor's probe) say it their way."""

    def __init__(self, x: torch.Tensor, why: str) -> None:
        self.why = why
        super().__init__(f"the model cannot be applied to x (shape {tuple(x.shape)}, "
                         f"{str(x.dtype).removeprefix('torch.')}): {why}")  # fmt: skip


def layout_problem(t: torch.Tensor) -> str | None:
    """Why ``t`` has no values alignctl can read sample by sample, or None: a meta tensor
    (shapes only), a sparse or nested tensor (no strides; ``x[:2]`` fails in torch)."""
    if t.is_meta:
        return "is a meta tensor (no data)"
    if getattr(t, "is_nested", False):
        return "is a nested tensor: pad its samples into one (n, ...) tensor"
    if t.layout != torch.strided:
        return f"is a {str(t.layout).removeprefix('torch.')} tensor: pass it .to_dense()"
    return None


def as_inputs(x, what: str = "x") -> torch.Tensor:
    """``x`` (a tensor, NumPy array or nested list of numbers) as a detached tensor of one or
    more samples of real numbers or integers; InputError otherwise."""
    if x is None:
        raise InputError(f"{what} is None: pass a tensor of inputs (n, ...)")
    if isinstance(x, dict):  # a tokenizer's BatchEncoding
        raise InputError(f"{what} is a mapping ({', '.join(map(str, x))}): pass one tensor, "
                         "e.g. its input_ids (sequences of one length, no padding)")  # fmt: skip
    if isinstance(x, str | bytes):
        raise InputError(f"{what} is a {type(x).__name__}, not a tensor or array of numbers")
    try:
        t = torch.as_tensor(x).detach()
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"{what} is not a tensor or array of numbers: {first_line(e)}") from None
    bad = layout_problem(t)
    if bad:
        raise InputError(f"{what} {bad}")
    if t.ndim < 1 or t.shape[0] < 1:
        raise InputError(f"{what} has no samples (shape {tuple(t.shape)})")
    if t.is_complex():
        raise InputError(f"{what} holds complex numbers: pass real numbers or token ids")
    return t


def as_labels(
    y, n: int, what: str = "y", labels: str = "labels", inputs: str = "samples"
) -> torch.Tensor | None:
    """``y`` as a tensor of n labels (shape (n,) or (n, 1)), or None; a count that is not
    the number of samples, or complex labels: InputError (their values are checked against
    the classes once the model's outputs are known, :func:`alignctl.geometry.vjp.check_labels`)."""
    if y is None:
        return None
    t = as_inputs(y, what)
    if t.numel() != n or (t.ndim > 1 and t.shape[0] != n):
        raise InputError(f"{t.numel()} {labels} for {n} {inputs} ({what} of shape "
                         f"{tuple(t.shape)}; one label per sample)")  # fmt: skip
    return t


def count(value, name: str, *, optional: bool = True) -> int | None:
    """A positive integer option (batch size): Python, NumPy or 0-d torch integers; None when
    ``optional``. A float (2.5, NaN), a bool or a string: InputError, not a silent int()."""
    if value is None and optional:
        return None
    try:
        n = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        n = None
    if n is None or n < 1:
        raise InputError(f"{name} must be a positive integer, not {short(value)}")
    return n


def flags(**values) -> tuple[bool, ...]:
    """Switches (``robustness=``, ``overwrite=``) as bools, in the order given: True/False or
    a NumPy/0-d torch bool. A string is refused, not read by its truth: ``overwrite="no"``
    would replace an earlier run."""
    out = []
    for name, value in values.items():
        numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
        torch_bool = isinstance(value, torch.Tensor) and value.dtype == torch.bool
        if numpy_bool or (torch_bool and value.dim() == 0):
            value = bool(value)
        if not isinstance(value, bool):
            raise InputError(f"{name} must be True or False, not {type(value).__name__}")
        out.append(value)
    return tuple(out)


def seed(value) -> int:
    """An integer seed (any sign; torch wraps it)."""
    try:
        if not isinstance(value, bool):
            return operator.index(value)
    except TypeError:
        pass
    raise InputError(f"seed must be an integer, not {short(value)}")


def dtype(value) -> torch.dtype | None:
    """None (the model's own floating dtype, float32 for a half-precision model), or
    float32/float64 (a ``torch.dtype`` or its name)."""
    if value is None:
        return None
    name = value.removeprefix("torch.") if isinstance(value, str) else None
    if name in DTYPES:
        return DTYPES[name]
    if value in DTYPES.values():
        return value
    raise InputError(f"dtype must be torch.float32 or torch.float64 (None: the model's own), "
                     f"not {short(value)}")  # fmt: skip


def model(value) -> torch.nn.Module:
    """A module whose parameters hold values alignctl can differentiate: not a meta model
    (shapes only) and not a complex one."""
    if not isinstance(value, torch.nn.Module):
        raise InputError(f"model must be a torch.nn.Module, not {type(value).__name__}")
    for name, p in value.named_parameters():
        if p.is_meta:
            raise InputError(f"the model's parameter {name} is on the meta device (no "
                             "values): load its weights first (to_empty(), then "
                             "load_state_dict)")  # fmt: skip
        if p.is_complex():
            raise InputError(f"the model's parameter {name} is complex: alignctl measures "
                             "real-valued classifiers")  # fmt: skip
    return value


def boxes(notes, errors, outputs) -> None:
    """The lists/dict a caller passes to receive notes, errors and logits: checked before the
    work, not after it."""
    for value, kind, name in ((notes, list, "notes"), (errors, dict, "errors"),
                              (outputs, list, "outputs")):  # fmt: skip
        if value is not None and not isinstance(value, kind):
            raise InputError(f"{name} must be a {kind.__name__} (or None), not "
                             f"{type(value).__name__}")  # fmt: skip
