"""Datasets: the :class:`Dataset` record, the task registry and :func:`load_data`, the reader
of the config's ``data:`` section (``{task: NAME, **params}``, ``{path: FILE}`` or
``{factory: SPEC, kwargs: {...}}``; see docs/config.md).

Built-in tasks (one file each) are the paper's setups (App. A); their keyword defaults are the
paper's settings and every random draw uses a CPU ``torch.Generator`` seeded from ``seed``, so
the data is the same on every machine.
"""

from __future__ import annotations

import inspect
from dataclasses import InitVar, dataclass, field
from pathlib import Path

import torch

from alignctl.errors import InputError, short
from alignctl.registry import Registry
from alignctl.runs.factories import call_factory, check_finite, check_kwargs
from alignctl.runs.limits import expand_user
from alignctl.runs.tasks.checks import check_dataset, check_input_range, check_num_classes
from alignctl.runs.validate import check_data_size

TASKS: Registry = Registry("task")
register_task = TASKS.register


@dataclass
class Dataset:
    """Training (and test) data with what is known about it. Checked when made
    (:func:`alignctl.runs.tasks.checks.check_dataset`, the same rules as a data file's): a
    mistake is one InputError ``SOURCE: FIELD ...``; arrays, NumPy arrays and nested lists
    become tensors (inputs float32, or int64 token ids; labels int64)."""

    x_train: torch.Tensor  # (n, *input_shape) float32; int64 tokens for token models
    y_train: torch.Tensor  # (n,) int64. Scalar-output binary tasks: labels in {-1,+1}
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    num_classes: int | None = None  # C; 1 for scalar-output binary tasks; None = unknown
    input_range: tuple[float, float] | None = None  # valid input range (PGD clamps to it)
    name: str = "data"
    meta: dict = field(default_factory=dict)  # task facts (e.g. the XOR noise criterion)
    source: InitVar[str] = "Dataset"  # what error messages name (a data file, a factory)

    def __post_init__(self, source: str) -> None:
        check_dataset(self, source if isinstance(source, str) else "Dataset")


def sample_indices(total: int, n: int | None, gen: torch.Generator, what: str) -> torch.Tensor:
    """``n`` distinct indices of ``range(total)`` drawn with ``gen`` (all, shuffled, if None)."""
    if n is None:
        n = total
    if not isinstance(n, int) or n < 1 or n > total:
        raise InputError(f"{what}: asked for {n} samples, but 1..{total} are available")
    return torch.randperm(total, generator=gen)[:n]


def make_dataset(x_train, y_train, x_test=None, y_test=None, *, source: str, **extra) -> Dataset:
    """A checked :class:`Dataset` of arrays/tensors (InputErrors name ``source``)."""
    return Dataset(x_train, y_train, x_test, y_test, **extra, source=source)


def _user_extras(spec: dict, source: str) -> dict:
    """Optional facts a user may add to a path/factory data section."""
    out: dict = {}
    if spec.get("num_classes") is not None:
        out["num_classes"] = check_num_classes(spec["num_classes"], source)
    if spec.get("input_range") is not None:
        out["input_range"] = check_input_range(spec["input_range"], source)
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
