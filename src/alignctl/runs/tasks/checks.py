"""What a :class:`alignctl.runs.tasks.Dataset` may hold, checked when one is made: by a
built-in task, a data file (``data: {path: ...}``), a data factory or a user's
``alignctl.Dataset(...)``, so that every route accepts and refuses the same data. Each refusal
is one :class:`InputError` ``SOURCE: FIELD ...`` naming the field and what is wrong.

The rules (docs/config.md, "Data files"):

- inputs ``x_*``: a rectangular array of numbers (tensor, NumPy array or nested list) of shape
  ``(n, *input_shape)``, n >= 1, no dimension 0; real floats, finite and within float32's range
  (kept as float32), or integers (token ids for token models, kept as int64; unsigned values
  beyond int64 refused), bools become 0/1 floats; train and test the same kind and sample shape;
- labels ``y_*``: one integer class label per sample, shape ``(n,)`` or ``(n, 1)`` (kept as
  int64): integral floats are fine; NaN/inf, fractions, bools, complex numbers refused; no label
  below -1, and -1 only beside 0/1 (the {-1, +1} labels of a scalar-output binary task): no
  model can output anything else (:func:`alignctl.runs.validate.check_labels`);
- ``x_test`` and ``y_test`` both or neither; ``num_classes`` None or a positive integer that the
  labels fit (:func:`alignctl.runs.validate.check_data_labels`); ``input_range`` None or two
  finite numbers low < high; ``name`` a string; ``meta`` a dict.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from alignctl.errors import InputError, first_line, short
from alignctl.geometry.arguments import layout_problem
from alignctl.geometry.finite import all_finite
from alignctl.runs.validate import check_data_labels

MAX_LABEL = 2**62  # .long() of a larger label (uint64, 1e20) would wrap; no C is that large
_INT64_MAX = 2**63 - 1


def _from_numpy(arr: np.ndarray, what: str) -> torch.Tensor:
    if arr.dtype == object:
        raise InputError(f"{what} has dtype object; use plain numeric arrays")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{what} has non-numeric dtype {arr.dtype}")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 8:  # torch has no long double
        raise InputError(f"{what} has dtype {arr.dtype} (long double), which torch cannot hold; "
                         "convert it to float64 or float32")  # fmt: skip
    if not arr.dtype.isnative:  # big-endian data (a file written elsewhere): same values
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind == "u" and arr.dtype.itemsize > 1:  # torch computes little with uint16+
        if arr.size and arr.dtype.itemsize == 8 and int(arr.max()) > _INT64_MAX:
            raise InputError(f"{what} holds {float(arr.max()):.6g}, beyond int64 (9.2e18)")
        arr = arr.astype(np.int64)
    if not (arr.flags.c_contiguous and arr.flags.writeable):
        arr = arr.copy(order="C")  # (np.ascontiguousarray made a 0-d array 1-d: one sample)
    return torch.from_numpy(arr)


def as_tensor(a, what: str) -> torch.Tensor:
    """``a`` (a tensor, NumPy array or nested list of numbers) as a CPU tensor of a numeric
    dtype torch computes with (NumPy's uint16..uint64 as int64, float8 as float32)."""
    if a is None:
        raise InputError(f"{what} is None")
    if isinstance(a, dict):
        raise InputError(f"{what} is a mapping ({short(list(a))}), not an array of numbers")
    if isinstance(a, torch.Tensor):
        bad = layout_problem(a)
        if bad:
            raise InputError(f"{what} {bad}")
        if a.is_quantized:
            raise InputError(f"{what} is a quantized tensor: pass it .dequantize()")
        t = a.detach().cpu()
        if t.dtype in (torch.uint16, torch.uint32, torch.uint64):
            return _from_numpy(t.numpy(), what)
        if t.is_floating_point() and t.element_size() == 1:  # float8: torch sums no float8
            return t.float()
        return t
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError, OverflowError) as e:  # rows of different lengths
        raise InputError(f"{what} is not a rectangular array of numbers: {first_line(e)}") from None
    return _from_numpy(arr, what)


def check_x(x, source: str, key: str) -> torch.Tensor:
    """Inputs ``x_*`` as float32 (floats, bools) or int64 (token ids); see the module rules."""
    x = as_tensor(x, f"{source}: {key}")
    if x.ndim < 1:
        raise InputError(f"{source}: {key} is a single number (0-d), not (n, ...) samples")
    if x.shape[0] < 1:
        raise InputError(f"{source}: {key} has no samples (shape {tuple(x.shape)})")
    if 0 in x.shape:
        raise InputError(f"{source}: {key} samples have no elements (shape {tuple(x.shape)})")
    if x.is_complex():
        raise InputError(f"{source}: {key} is complex; inputs must be real")
    if x.is_floating_point():
        if not all_finite(x):
            raise InputError(f"{source}: {key} contains NaN or infinite values")
        x32 = x.float()  # float64 beyond float32's range would become inf here: check again
        if not all_finite(x32):
            raise InputError(f"{source}: {key} holds values beyond float32's range (3.4e38)")
        return x32
    # integer inputs are tokens for token models; bool becomes 0/1 floats
    return x.float() if x.dtype == torch.bool else x.long()


def check_y(y, n: int, source: str, key: str) -> torch.Tensor:
    """Labels ``y_*`` of ``n`` samples as int64; see the module rules."""
    y = as_tensor(y, f"{source}: {key}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # (n, 1) -> (n,)
    if y.ndim != 1:
        raise InputError(f"{source}: {key} must have shape (n,), got {tuple(y.shape)}")
    if y.shape[0] != n:
        key_x = key.replace("y_", "x_")
        raise InputError(f"{source}: {key_x} has {n} samples but {key} has {y.shape[0]}")
    if y.dtype == torch.bool or y.is_complex():
        raise InputError(f"{source}: {key} must be integer class labels, got {y.dtype}")
    if y.is_floating_point():
        if not all_finite(y):
            raise InputError(f"{source}: {key} contains NaN or infinite values")
        if not torch.equal(y, torch.round(y)):
            raise InputError(f"{source}: {key} must be integer class labels, got fractional values")
    if y.double().abs().max() >= MAX_LABEL:
        big = y[y.double().abs().argmax()].item()
        raise InputError(f"{source}: {key}: label {big:.6g} is far beyond any number of classes")
    return y.long()


def check_label_signs(y: torch.Tensor | None, what: str) -> None:
    """Labels of an unknown number of classes: none below -1, and -1 only beside 0 and 1
    (no model can output anything else; with ``num_classes``, ``check_data_labels``)."""
    if y is None:
        return
    low, high = int(y.min()), int(y.max())
    if low < -1 or (low == -1 and high > 1):
        bad = low if low < -1 else -1
        raise InputError(f"{what}: label {bad} is negative; class labels are 0..C-1, "
                         "or -1 and +1 for a binary task with a scalar output")  # fmt: skip


def check_num_classes(c, what: str) -> int | None:
    """``num_classes``: None or a positive integer (Python or NumPy, not a bool or float)."""
    if c is None:
        return None
    if isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 1:
        raise InputError(f"{what}: num_classes must be a positive integer, got {short(c)}")
    if c >= MAX_LABEL:
        raise InputError(f"{what}: num_classes {short(c)} is far beyond any number of classes")
    return int(c)


def _number(v) -> float | None:
    """``v`` as a finite float, or None: a real number (Python, NumPy or a 0-d tensor's), not
    a bool, string or NaN."""
    if isinstance(v, (torch.Tensor, np.ndarray)):
        if v.ndim != 0 or (isinstance(v, torch.Tensor) and layout_problem(v)):
            return None
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if np.isfinite(f) else None


def check_input_range(r, what: str) -> tuple[float, float] | None:
    """``input_range``: None or [low, high], finite real numbers with low < high (a NaN bound
    passed ``low < high``: every comparison with NaN is False)."""
    if r is None:
        return None
    bounds = [_number(v) for v in r] if isinstance(r, (list, tuple)) and len(r) == 2 else [None]
    if None in bounds or bounds[0] >= bounds[1]:
        raise InputError(f"{what}: input_range must be [low, high], finite numbers with "
                         f"low < high, got {short(r)}")  # fmt: skip
    return bounds[0], bounds[1]


def check_dataset(ds, source: str) -> None:
    """Check every field of ``ds`` and replace its arrays by their checked tensors (in place:
    :meth:`Dataset.__post_init__`)."""
    if ds.x_train is None or ds.y_train is None:
        raise InputError(f"{source}: needs both x_train and y_train (labels are required)")
    if (ds.x_test is None) != (ds.y_test is None):
        raise InputError(f"{source}: give both x_test and y_test, or neither")
    ds.x_train = check_x(ds.x_train, source, "x_train")
    ds.y_train = check_y(ds.y_train, ds.x_train.shape[0], source, "y_train")
    if ds.x_test is not None:
        ds.x_test = check_x(ds.x_test, source, "x_test")
        ds.y_test = check_y(ds.y_test, ds.x_test.shape[0], source, "y_test")
        if ds.x_test.shape[1:] != ds.x_train.shape[1:]:
            raise InputError(
                f"{source}: x_test samples have shape {tuple(ds.x_test.shape[1:])}, "
                f"x_train samples {tuple(ds.x_train.shape[1:])}"
            )
        if ds.x_test.dtype != ds.x_train.dtype:  # one model takes both: floats or token ids
            kinds = {torch.float32: "floats", torch.int64: "integers (token ids)"}
            raise InputError(f"{source}: x_test holds {kinds[ds.x_test.dtype]} but x_train "
                             f"{kinds[ds.x_train.dtype]}; give both the same kind")  # fmt: skip
    ds.num_classes = check_num_classes(ds.num_classes, source)
    ds.input_range = check_input_range(ds.input_range, source)
    for key in ("y_train", "y_test"):
        if ds.num_classes:
            check_data_labels(getattr(ds, key), ds.num_classes, f"{source}: {key}")
        else:
            check_label_signs(getattr(ds, key), f"{source}: {key}")
    if not isinstance(ds.name, str):
        raise InputError(f"{source}: name must be a string, got {short(ds.name)}")
    if not isinstance(ds.meta, dict):
        raise InputError(f"{source}: meta must be a dict, got {type(ds.meta).__name__}")
