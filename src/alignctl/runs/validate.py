"""Checks that run before anything is allocated or computed: sizes within a budget, numbers
that are numbers, labels a model can output. Each raises :class:`InputError` (exit 2).

Budgets (docs/guarantees.md): a built-in model may hold at most :data:`MAX_PARAMETERS`
parameters and a built-in task at most :data:`MAX_DATA_ELEMENTS` input and label elements,
counted before anything is built by the plug-in's own ``n_parameters`` / ``elements``
function (tests check them against what the built object holds). Values shown in
messages are cut to :data:`REPR_CHARS` characters.
"""

from __future__ import annotations

import math

from alignctl.errors import InputError, first_line, short

MAX_PARAMETERS = 2**30  # ~1.07e9 parameters: 4 GiB of float32 weights, 3x that to train
MAX_DATA_ELEMENTS = 2**30  # ~1.07e9 elements: 4 GiB of float32 inputs


def not_found(what: str, path: object) -> InputError:
    """``WHAT PATH not found``; for a path written the Windows way (``data\\x.npz``,
    ``C:\\data``), which a config committed from Windows holds, it says that ``\\`` is part of a
    file name here, not a folder separator."""
    text = str(path)
    windows = "\\" in text or (len(text) > 1 and text[1] == ":" and text[0].isalpha())
    hint = (
        " (a Windows path? here \\ is part of a file name; write folders with /)" if windows else ""
    )
    return InputError(f"{what} {text} not found{hint}")


def is_finite_real(value) -> bool:
    """Whether ``value`` is a real number (int or float, not a bool) that a float holds
    finitely. Python's integers are unbounded: ``math.isfinite(10**400)`` and ``float()`` raise
    OverflowError, so an integer beyond ~1.8e308 is not finite here (it is no size, count or
    threshold alignctl could use)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def refuse_huge_integers(value, source: str, path: str = "") -> None:
    """InputError for an integer beyond the float range anywhere in a config mapping (the
    YAML reader and the Python API give any size): every later check, estimate and message
    converts numbers to float, which would raise OverflowError instead of naming the key."""
    if isinstance(value, int) and not isinstance(value, bool) and not is_finite_real(value):
        raise InputError(f"{source}: {path} is beyond the range of a float (~1.8e308), "
                         f"got {short(value)}")  # fmt: skip
    if path.count(".") + path.count("[") > 64:  # configs nest ~3 deep; YAML refuses > 64
        return
    if isinstance(value, dict):
        for k, v in value.items():
            refuse_huge_integers(v, source, f"{path}.{k}" if path else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            refuse_huge_integers(v, source, f"{path}[{i}]")


def count_text(n: int) -> str:
    """``n`` for a message, ``1.07e+09`` style, also beyond the float range (``~1e400``)."""
    try:
        return f"{n:.3g}"
    except OverflowError:
        return f"~1e{int(n.bit_length() * math.log10(2))}"


def finite(value, what: str, *, lo: float | None = None, strict: bool = False) -> float:
    """``value`` as a float: a real, finite number (not a bool, not a string), ``>= lo``
    (``> lo`` if ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{what} must be a number, got {short(value)}")
    if not is_finite_real(value):
        raise InputError(f"{what} must be a finite number, got {short(value)}")
    if lo is not None and (value <= lo if strict else value < lo):
        raise InputError(f"{what} must be {'>' if strict else '>='} {lo:g}, got {value:g}")
    return float(value)


# Integer parameters count things done or kept per step or per attack (PGD steps,
# projections, a gradient window): past this they only exhaust time or memory (a PGD of
# 10**400 steps is a run that never ends, not an attack). analyze's PGD and the regularisers'.
MAX_INT_PARAM = 10_000


def check_pgd(eps: float | None, alpha: float | None, steps: int | None = None) -> None:
    """``--eps`` >= 0 and ``--alpha`` > 0, both finite (None: the defaults, computed later);
    ``steps`` (an integer >= 1, checked by the caller) at most :data:`MAX_INT_PARAM`."""
    if eps is not None:
        finite(eps, "--eps", lo=0.0)
    if alpha is not None:
        finite(alpha, "--alpha", lo=0.0, strict=True)
    if steps is not None and steps > MAX_INT_PARAM:
        raise InputError(f"--pgd-steps must be at most {MAX_INT_PARAM:,}, got {short(steps)}")


def size(name: str, value) -> int:
    """A layer size: a positive integer (an integral float such as 1e3 is accepted).
    ValueError otherwise; for the ``n_parameters`` / ``elements`` estimates of plug-ins."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {short(value)}")
    return value


def sizes(name: str, values) -> list[int]:
    """A list of layer sizes (a single size is a list of one)."""
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{name} must be a list of positive integers, got {short(values)}")
    return [size(name, v) for v in values]


def _estimate(fn, attr: str, kwargs: dict, what: str) -> int | None:
    import inspect

    estimate = getattr(fn, attr, None)
    if estimate is None:
        return None
    args = {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    args.update(kwargs)
    try:
        return estimate(**args)
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(f"{what}: {_first_line(e)}") from None


def check_model_size(fn, kwargs: dict, what: str) -> None:
    """Refuse a built-in model whose ``fn.n_parameters(**kwargs)`` (exact, computed from the
    sizes: nothing is allocated) exceeds :data:`MAX_PARAMETERS`, or with a size below 1."""
    n = _estimate(fn, "n_parameters", kwargs, what)
    if n is not None and n > MAX_PARAMETERS:
        raise InputError(
            f"{what}: {count_text(n)} parameters, over the budget of {MAX_PARAMETERS:.3g} "
            "(docs/guarantees.md)"
        )


def check_data_size(fn, params: dict, what: str) -> None:
    """Refuse a task whose ``fn.elements(**params)`` estimate exceeds the data budget."""
    n = _estimate(fn, "elements", params, what)
    if n is not None and n > MAX_DATA_ELEMENTS:
        raise InputError(
            f"{what}: {count_text(n)} data elements, over the budget of {MAX_DATA_ELEMENTS:.3g} "
            "(docs/guarantees.md)"
        )


def check_labels(y, n_classes: int, what: str) -> None:
    """Labels a model with ``n_classes`` outputs can predict: 0..C-1, or {0, 1} / {-1, +1}
    for a scalar output (C = 1)."""
    import torch

    if y is None or len(y) == 0:
        return
    y = torch.as_tensor(y).reshape(-1)
    if n_classes == 1:
        bad = ~((y == 0) | (y == 1) | (y == -1))
        if bad.any():
            raise InputError(
                f"{what}: label {int(y[bad][0])} is not binary; a scalar-output model needs "
                "labels in {0, 1} or {-1, +1}"
            )
        return
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        raise InputError(
            f"{what}: label {int(y[bad][0])} is out of range for a model with "
            f"{n_classes} outputs (valid: 0..{n_classes - 1})"
        )


def check_declared_classes(num_classes, n_out: int) -> None:
    """A data section's ``num_classes`` against the model's ``n_out`` outputs: chance, 1/C,
    decides the verdict, so a C the model cannot have is refused, never used. More outputs
    than classes are fine (a token model's vocabulary head); a scalar output takes 1 or 2."""
    if not num_classes or num_classes <= (2 if n_out == 1 else n_out):
        return
    raise InputError(
        f"data num_classes is {num_classes} but the model has {n_out} output"
        f"{'s' if n_out != 1 else ''}; set num_classes in the data section to the number of "
        "classes the labels come from"
    )


def check_data_labels(y, num_classes: int, what: str) -> None:
    """Labels of a data file or factory against its own ``num_classes``: 0..C-1, and -1 too
    for a binary task (C <= 2: labels -1/+1 of a scalar output)."""
    import torch

    if y is None or len(y) == 0:
        return
    y = torch.as_tensor(y).reshape(-1)
    low = -1 if num_classes <= 2 else 0
    bad = (y < low) | (y >= max(num_classes, 2))
    if bad.any():
        valid = "0..1, or -1 and +1" if low < 0 else f"0..{num_classes - 1}"
        raise InputError(
            f"{what}: label {int(y[bad][0])} is out of range for num_classes {num_classes} "
            f"(valid: {valid})"
        )


def check_run_labels(run) -> None:
    """Train and test labels of ``run`` against its model's number of outputs (one forward
    pass on one sample); a model that cannot be applied is left to the analysis to report."""
    import torch

    data = run.load_data()
    try:
        model = run.build_model().eval()
        with torch.no_grad():
            out = model(data.x_train[:1])
    except Exception:  # noqa: BLE001  the analysis reports model errors with their context
        return
    if not isinstance(out, torch.Tensor) or out.dim() not in (1, 2):
        return
    n_classes = 1 if out.dim() == 1 else int(out.shape[1])  # as the analysis counts them
    check_declared_classes(data.num_classes, n_classes)
    check_labels(data.y_train, n_classes, "y_train")
    check_labels(data.y_test, n_classes, "y_test")


def _first_line(e: Exception) -> str:
    line = first_line(e)
    return line if len(line) <= 200 else line[:197] + "..."
