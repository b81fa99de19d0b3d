"""Datasets: the :class:`Dataset` record, the task registry and :func:`load_data`, the reader
of the config's ``data:`` section (``{task: NAME, **params}``, ``{path: FILE}`` or
``{factory: SPEC, kwargs: {...}}``; see docs/config.md).

Built-in tasks (one file each) are the paper's setups (App. A); their keyword defaults are the
paper's settings and every random draw uses a CPU ``torch.Generator`` seeded from ``seed``, so
the data is the same on every machine.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from alignctl.errors import InputError, short
from alignctl.geometry.finite import all_finite
from alignctl.registry import Registry
from alignctl.runs.factories import call_factory, check_finite, check_kwargs
from alignctl.runs.limits import expand_user
from alignctl.runs.validate import check_data_labels, check_data_size, is_finite_real

TASKS: Registry = Registry("task")
register_task = TASKS.register


@dataclass
class Dataset:
    x_train: torch.Tensor  # (n, *input_shape) float32; int64 tokens for token models
    y_train: torch.Tensor  # (n,) int64. Scalar-output binary tasks: labels in {-1,+1}
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    num_classes: int | None = None  # C; 1 for scalar-output binary tasks; None = unknown
    input_range: tuple[float, float] | None = None  # valid input range (PGD clamps to it)
    name: str = "data"
    meta: dict = field(default_factory=dict)  # task facts (e.g. the XOR noise criterion)


def sample_indices(total: int, n: int | None, gen: torch.Generator, what: str) -> torch.Tensor:
    """``n`` distinct indices of ``range(total)`` drawn with ``gen`` (all, shuffled, if None)."""
    if n is None:
        n = total
    if not isinstance(n, int) or n < 1 or n > total:
        raise InputError(f"{what}: asked for {n} samples, but 1..{total} are available")
    return torch.randperm(total, generator=gen)[:n]


def _as_tensor(a, what: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu()
    arr = np.asarray(a)
    if arr.dtype == object:
        raise InputError(f"{what} has dtype object; use plain numeric arrays")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{what} has non-numeric dtype {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr))


def _check_x(x, source: str, key: str) -> torch.Tensor:
    x = _as_tensor(x, f"{source}: {key}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise InputError(f"{source}: {key} has no samples (shape {tuple(x.shape)})")
    if x.is_floating_point():
        if not all_finite(x):
            raise InputError(f"{source}: {key} contains NaN or infinite values")
        x32 = x.float()  # float64 beyond float32's range would become inf here: check again
        if not all_finite(x32):
            raise InputError(f"{source}: {key} holds values beyond float32's range (3.4e38)")
        return x32
    if x.is_complex():
        raise InputError(f"{source}: {key} is complex; inputs must be real")
    # integer inputs are tokens for token models; bool becomes 0/1 floats
    return x.float() if x.dtype == torch.bool else x.long()


def _check_y(y, n: int, source: str, key: str) -> torch.Tensor:
    y = _as_tensor(y, f"{source}: {key}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # (n, 1) -> (n,)
    if y.ndim != 1:
        raise InputError(f"{source}: {key} must have shape (n,), got {tuple(y.shape)}")
    if y.shape[0] != n:
        key_x = key.replace("y_", "x_")
        raise InputError(f"{source}: {key_x} has {n} samples but {key} has {y.shape[0]}")
    if y.is_floating_point():
        if not torch.isfinite(y).all() or not torch.equal(y, torch.round(y)):
            raise InputError(f"{source}: {key} must be integer class labels, got fractional values")
    elif y.dtype == torch.bool or y.is_complex():
        raise InputError(f"{source}: {key} must be integer class labels, got {y.dtype}")
    if y.numel() and y.double().abs().max() >= 2.0**62:  # .long() would wrap it (uint64, 1e20)
        big = y[y.double().abs().argmax()].item()
        raise InputError(f"{source}: {key}: label {big:.6g} is far beyond any number of classes")
    return y.long()


def make_dataset(x_train, y_train, x_test=None, y_test=None, *, source: str, **extra) -> Dataset:
    """Validate arrays/tensors and make a :class:`Dataset` (InputErrors name ``source``)."""
    if x_train is None or y_train is None:
        raise InputError(f"{source}: needs both x_train and y_train (labels are required)")
    if (x_test is None) != (y_test is None):
        raise InputError(f"{source}: give both x_test and y_test, or neither")
    xt = _check_x(x_train, source, "x_train")
    ds = Dataset(xt, _check_y(y_train, xt.shape[0], source, "y_train"), **extra)
    if x_test is not None:
        ds.x_test = _check_x(x_test, source, "x_test")
        ds.y_test = _check_y(y_test, ds.x_test.shape[0], source, "y_test")
        if ds.x_test.shape[1:] != xt.shape[1:]:
            raise InputError(
                f"{source}: x_test samples have shape {tuple(ds.x_test.shape[1:])}, "
                f"x_train samples {tuple(xt.shape[1:])}"
            )
    if ds.num_classes:
        check_data_labels(ds.y_train, ds.num_classes, f"{source}: y_train")
        check_data_labels(ds.y_test, ds.num_classes, f"{source}: y_test")
    return ds


def _user_extras(spec: dict, source: str) -> dict:
    """Optional facts a user may add to a path/factory data section."""
    out: dict = {}
    if spec.get("num_classes") is not None:
        c = spec["num_classes"]
        if not isinstance(c, int) or isinstance(c, bool) or c < 1:
            raise InputError(f"{source}: num_classes must be a positive integer, got {short(c)}")
        out["num_classes"] = c
    if spec.get("input_range") is not None:
        r = spec["input_range"]
        ok = isinstance(r, (list, tuple)) and len(r) == 2
        # a NaN bound passed `low < high` (every comparison with NaN is False)
        numbers = ok and all(is_finite_real(v) for v in r)
        if not numbers or r[0] >= r[1]:
            raise InputError(
                f"{source}: input_range must be [low, high], finite numbers with low < high, "
                f"got {short(r)}"
            )
        out["input_range"] = (float(r[0]), float(r[1]))
    return out


_USER_KEYS = ("num_classes", "input_range")


def _check_types(fn, params: dict, what: str) -> None:
    """A parameter whose default is a bool/int/float/str must get a value of that type
    (an int where a float is expected is fine), so mistakes fail here, not deep inside."""
    for name, p in inspect.signature(fn).parameters.items():
        d, v = p.default, params.get(name)
        if name not in params or d is None or d is inspect.Parameter.empty or v is None:
            continue
        want = (int, float) if type(d) is float else type(d)
        if not isinstance(v, want) or (isinstance(v, bool) and type(d) is not bool):
            raise InputError(f"{what}: {name} must be {type(d).__name__}, got {short(v)}")


def load_data(spec: dict, base_dir: Path) -> Dataset:
    """Build the dataset described by a config ``data:`` section."""
    from alignctl.runs.tasks.files import read_data_file

    base_dir = Path(base_dir)
    if not isinstance(spec, dict):
        raise InputError(f"data section must be a mapping, got {short(spec)}")
    kinds = [k for k in ("task", "path", "factory") if k in spec]
    if len(kinds) != 1:
        raise InputError("data section needs exactly one of 'task', 'path' or 'factory'")
    kind = kinds[0]
    if kind == "task":
        fn = TASKS.get(str(spec["task"]))
        params = {k: v for k, v in spec.items() if k != "task"}
        what = f"task {spec['task']!r}"
        check_finite(params, what)
        check_kwargs(fn, params, what)
        _check_types(fn, params, what)
        check_data_size(fn, params, what)  # the data budget, before anything is drawn
        if "root" in inspect.signature(fn).parameters and params.get("root") is not None:
            params["root"] = base_dir / expand_user(params["root"])
        try:
            ds = fn(**params)
        except InputError:
            raise
        except (TypeError, ValueError, RuntimeError, ArithmeticError) as e:
            raise InputError(f"{what}: {e}") from e
        return ds
    valid = (kind, "kwargs", *_USER_KEYS) if kind == "factory" else (kind, *_USER_KEYS)
    extra = sorted(set(spec) - set(valid))
    if extra:
        raise InputError(
            f"data section with '{kind}': unknown key(s) {', '.join(extra)}; "
            f"valid: {', '.join(valid)}"
        )
    if kind == "path":
        path = expand_user(spec["path"])
        path = path if path.is_absolute() else base_dir / path
        arrays = read_data_file(path)
        return make_dataset(
            **arrays, source=str(path), name=path.stem, **_user_extras(spec, str(path))
        )
    source = f"data factory {spec['factory']}"
    out = call_factory(spec["factory"], base_dir, spec.get("kwargs") or {}, "data")
    extras = _user_extras(spec, source)
    if isinstance(out, Dataset):
        facts = {"num_classes": out.num_classes, "input_range": out.input_range}
        facts.update(extras)
        return make_dataset(
            out.x_train,
            out.y_train,
            out.x_test,
            out.y_test,
            source=source,
            name=out.name,
            meta=out.meta,
            **facts,
        )
    if not isinstance(out, (tuple, list)) or len(out) not in (2, 4):
        raise InputError(
            f"{source} must return (x_train, y_train[, x_test, y_test]) or a Dataset, "
            f"got {type(out).__name__}"
        )
    return make_dataset(*out, source=source, name="data", **extras)


# the built-ins register themselves on import; they need TASKS and Dataset defined above
from alignctl.runs.tasks import cifar10, digits, mnist, modular_addition, sparse_parity, xor_cluster  # noqa: E402, F401
