"""Regularisers as plug-ins: one file each, registered by name, composable.

A regulariser implements any of four hooks, which the training loop calls every step in
this order: ``transform_batch`` (e.g. adversarial examples), ``penalty`` (added to the loss;
``penalty_rows`` may restrict it to a subset of the batch),
``after_backward`` (gradient filters, between ``backward()`` and the optimiser's ``step()``),
and ``state_dict``/``load_state_dict`` (saved with each checkpoint, restored on resume);
``check_inputs`` is asked once, before training, whether it can act on the data at all.
Weight decay stays in the optimiser, as in the paper, and no regulariser changes it.

On the command line a regulariser is ``NAME`` or ``NAME:key=value,key=value``, e.g.
``grokalign:lambda=0.01,n_proj=2``; ``lambda`` is passed to the constructor as ``lam``.
"""

from __future__ import annotations

import inspect
import math

from alignctl.errors import InputError, short
from alignctl.registry import Registry
from alignctl.runs.regspec import (  # noqa: F401 (parse_reg_spec: part of this API)
    ALIASES,
    canonical_params,
    parse_reg_spec,
    read_spec_values,
    tidy_spec,
)
from alignctl.runs.validate import MAX_INT_PARAM, is_finite_real

REGULARISERS: Registry = Registry("regulariser")
register_regulariser = REGULARISERS.register


class Regulariser:
    """Base class: every hook is a no-op."""

    name = "base"

    def transform_batch(self, model, x, y, loss_fn):
        return x

    def penalty(self, model, x, out, y):
        """x: the differentiable input (requires grad, or a token model's embedded sequence);
        out: the model's output for x, (n, C) or (n,). Returns a scalar or None."""
        return None

    def uses_chain(self) -> bool:
        """Whether ``chain_penalty`` may stand in for ``penalty`` on this step."""
        return False

    def chain_penalty(self, chain, out, rows, forward_rows):
        """``penalty`` for a ReLU MLP (:class:`alignctl.train.relu_chain.ReluChain`, whose
        forward pass gave ``out``) at the batch's ``rows`` (None: all); ``forward_rows()``
        returns those rows forwarded on their own, differentiable at the input."""
        raise NotImplementedError

    def penalty_due(self) -> bool:
        """Whether ``penalty`` returns a value on this step (asked before it is called): when
        no penalty is due, the step's forward pass is not differentiated at the input."""
        return True

    def penalty_rows(self, n: int, device):
        """Which of the batch's n rows ``penalty`` is computed on this step: None for all of
        them (it gets the step's own x and out), else an index tensor: the training step
        forwards those rows on their own and passes their x, out and y."""
        return None

    def penalty_size(self, n: int) -> int:
        """How many of a batch's n rows ``penalty_rows`` selects (without drawing them)."""
        return n

    def after_backward(self, model) -> None:
        pass

    def check_inputs(self, x) -> None:
        """ValueError (reported as one line by the Trainer, before anything trains) when this
        regulariser cannot act on inputs like ``x`` (the training inputs as the model gets
        them): one that would silently do nothing must not let a run pass as regularised."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def real(name: str, value, low: float, high: float = math.inf, *, open_low: bool = False) -> float:
    """``value`` as a float in [low, high] ((low, high] with ``open_low``); ValueError
    (reported as one line by :func:`build_regulariser`) for anything else: a parameter
    outside its range makes the method something else (an EMA with alpha 2 explodes,
    a negative PGD step descends the loss), never a variant of it."""
    if not is_finite_real(value):  # a bool, a string, nan, inf or an int past float's range
        raise ValueError(f"{name} must be a finite number, not {short(value)}")
    v = float(value)
    if not (low < v if open_low else low <= v) or not v <= high:
        left = "(" if open_low else "["
        right = "]" if math.isfinite(high) else ")"
        raise ValueError(f"{name} must be in {left}{low:g}, {high:g}{right}, not {short(value)}")
    return v


def count(name: str, value, low: int) -> int:
    """``value`` as an integer >= ``low`` (2.5 steps is an error, not 2)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, not {short(value)}")
    return value


def split_reg_list(text: str) -> list[str]:
    """The entries of a list of regulariser specs (``alignctl race --regs``): separated by
    ``;`` when there is one, else by commas, where a comma piece ``key=value`` continues the
    entry before it (a regulariser's name has no ``=``): ``"none,grokalign:lambda=0.1,n_proj=2"``
    -> ``["none", "grokalign:lambda=0.1,n_proj=2"]``."""
    if ";" in text:
        return [tidy_spec(r) for r in text.split(";") if r.strip()]
    out: list[str] = []
    for piece in filter(None, (p.strip() for p in text.split(","))):
        name = piece.partition(":")[0]
        if "=" in name:  # a parameter of the entry before
            if not out or ":" not in out[-1]:
                raise InputError(
                    f"--regs: parameter {piece!r} follows no NAME:key=value entry in {text!r}"
                )
            out[-1] += "," + piece
        else:
            out.append(piece)
    return [tidy_spec(r) for r in out]


def with_defaults(spec: dict, defaults: dict | None) -> dict:
    """``defaults`` overridden by ``spec``, whichever spelling of a parameter each uses."""
    mine = set(canonical_params(spec, spec.get("name")))
    other = {k: v for k, v in (defaults or {}).items()
             if k in spec or ALIASES.get(k, k) not in mine}  # fmt: skip
    return {**other, **spec}


def read_spec(spec, what: str = "a regulariser spec") -> dict:
    """A spec as a new dict: ``NAME[:key=value,...]`` parsed, a mapping's string values read
    as numbers where they are; anything else (a list, a number, non-string keys) is an
    InputError, not a TypeError from ``dict()``."""
    if isinstance(spec, str):
        return parse_reg_spec(spec)
    if isinstance(spec, dict) and all(isinstance(k, str) for k in spec):
        return read_spec_values(dict(spec))
    raise InputError(f"{what} is a string like 'grokalign:lambda=0.01' or a mapping with "
                     f"string keys like {{'name': 'grokalign', 'lambda': 0.01}}, not "
                     f"{type(spec).__name__} {short(spec)}")  # fmt: skip


def setting(spec: dict | str) -> tuple:
    """What a spec trains, whatever its spelling: (name, parameters under their constructor
    names with the constructor's defaults filled in, sorted): ``grokalign:n_proj=2,lambda=0.1``,
    ``grokalign:lam=0.1,n_proj=2`` and ``grokalign:lambda=1e-1,n_proj=2,norm=fro`` are one
    setting (values compare as numbers: 2.0 == 2)."""
    spec = read_spec(spec)
    name = str(spec.pop("name", None))
    params = canonical_params(spec, name)
    for k, p in inspect.signature(REGULARISERS.get(name)).parameters.items():
        if p.default is not inspect.Parameter.empty:
            params.setdefault(k, p.default)
    return name, tuple(sorted(params.items()))


def build_regulariser(spec: dict | str, defaults: dict | None = None) -> Regulariser:
    """A regulariser from a spec; unknown names or parameters are InputErrors listing the
    valid, a parameter under both spellings (``lambda``, ``lam``) an InputError naming it."""
    spec = read_spec(spec)
    if defaults is not None and not (
        isinstance(defaults, dict) and all(isinstance(k, str) for k in defaults)
    ):
        raise InputError("defaults must be a mapping of parameters, e.g. {'lambda': 0.01}")
    name = spec.pop("name", None)
    cls = REGULARISERS.get(str(name))
    canonical_params(spec, name)  # a parameter under both spellings, named as the user did
    params = canonical_params(with_defaults(spec, defaults), name)
    signature = inspect.signature(cls).parameters
    valid = [p for p in signature if p != "self"]
    for k, v in params.items():  # 2.0 or 1e1 where a count is expected (as config integers)
        default = signature[k].default if k in signature else None
        if isinstance(v, float) and v.is_integer() and type(default) is int:
            params[k] = int(v)
    inverse = {v: k for k, v in ALIASES.items()}  # messages use the user's names (lambda)
    for k, v in params.items():
        if isinstance(v, bool):  # True is an int to Python, not a number to a user
            raise InputError(
                f"regulariser {name}: {inverse.get(k, k)} must be a number or a name, not {v}"
            )
        if isinstance(v, (int, float)) and not is_finite_real(v):  # nan, inf, 10**400
            raise InputError(
                f"regulariser {name}: {inverse.get(k, k)} must be a finite number, not {short(v)}"
            )
        if isinstance(v, int) and abs(v) > MAX_INT_PARAM:  # counts: steps, draws, a window
            raise InputError(
                f"regulariser {name}: {k}={v:.3g} is over the limit of {MAX_INT_PARAM} "
                "(docs/guarantees.md)"
            )
    unknown = sorted(set(params) - set(valid))
    if unknown:
        shown = [inverse.get(p, p) for p in valid]
        raise InputError(
            f"regulariser {name}: unknown parameter(s) {', '.join(unknown)}; "
            f"valid: {', '.join(shown)}"
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as e:
        raise InputError(f"regulariser {name}: {e}") from None


def check_magnitudes(spec: dict, dtype) -> None:
    """InputError for a number in ``spec`` (a resolved regulariser spec) past the largest
    finite value of ``dtype``, the weights' (float32: 3.4e38; float16: 65504): the step scales
    gradients or clamps norms of that dtype by it, which torch refuses mid-run ("value cannot
    be converted to type float without overflow") after the run folder is written."""
    import torch

    if not dtype.is_floating_point:
        return
    top = torch.finfo(dtype).max
    inverse = {v: k for k, v in ALIASES.items()}
    for k, v in spec.items():
        if is_finite_real(v) and abs(float(v)) > top:
            raise InputError(f"regulariser {spec.get('name')}: {inverse.get(k, k)}={v:.3g} is "
                             f"past the largest {str(dtype).removeprefix('torch.')} value "
                             f"({top:.3g}) of this model's weights")  # fmt: skip


from alignctl.train.regularisers import adversarial, grokalign, grokfast, grokunalign, orthograd  # noqa: E402, F401
