"""Model registry and :func:`build_model`, the reader of the config's ``model:`` section.

Built-in architectures live one per file and register themselves with ``@register_model``.
A ``model:`` section is either ``{arch: NAME, **kwargs}`` or ``{factory: SPEC, kwargs: {...}}``
(see docs/config.md). Seeding is the caller's job: wrap the call in ``torch.manual_seed``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from alignctl.errors import InputError, short
from alignctl.registry import Registry
from alignctl.runs.factories import call_factory, check_finite, check_kwargs
from alignctl.runs.validate import check_model_size

MODELS: Registry = Registry("architecture")
register_model = MODELS.register


def build_model(spec: dict, base_dir: Path) -> torch.nn.Module:
    """Build the network described by a config ``model:`` section."""
    if not isinstance(spec, dict):
        raise InputError(f"model section must be a mapping, got {short(spec)}")
    from alignctl.geometry.outputs import check_spec

    check_spec(spec.get("output"))  # which output is the logits: read where outputs are used
    spec = {k: v for k, v in spec.items() if k != "output"}
    has_arch, has_factory = "arch" in spec, "factory" in spec
    if has_arch == has_factory:
        raise InputError("model section needs exactly one of 'arch' or 'factory'")
    if has_factory:
        extra = sorted(set(spec) - {"factory", "kwargs"})
        if extra:
            raise InputError(
                f"model section with 'factory': unknown key(s) {', '.join(extra)}; "
                "valid: factory, kwargs, output"
            )
        model = call_factory(spec["factory"], Path(base_dir), spec.get("kwargs") or {}, "model")
        if not isinstance(model, torch.nn.Module):
            raise InputError(
                f"model factory {spec['factory']} returned {type(model).__name__}, "
                "not a torch.nn.Module"
            )
        return model
    kwargs = {k: v for k, v in spec.items() if k != "arch"}
    fn = MODELS.get(str(spec["arch"]))
    what = f"model arch {spec['arch']!r}"
    check_finite(kwargs, what)
    check_kwargs(fn, kwargs, what)
    check_model_size(fn, kwargs, what)  # sizes and the parameter budget, nothing allocated
    try:
        return fn(**kwargs)
    except InputError:
        raise
    except (TypeError, ValueError, ArithmeticError) as e:
        raise InputError(f"{what}: {e}") from e


# the built-ins register themselves on import; they need MODELS defined above
from alignctl.runs.models import cnn, mlp, quadratic_mlp, transformer  # noqa: E402, F401
