"""The fully resolved config of a new run, from a preset or a file plus regularisers and seed.

Shared by ``alignctl train`` and ``alignctl race`` (and any library caller): a run directory's
``alignctl.yaml`` is this config, so a run describes itself.
"""

from __future__ import annotations

from pathlib import Path

from alignctl.errors import InputError
from alignctl.runs.validate import short


def build_config(config: Path | None, task: str | None, regs: list[str], seed: int | None,
                 epochs: int | None, overrides: dict | None = None):  # fmt: skip
    """The fully resolved config of a new run: a preset (--task) or a file (--config), the
    regularisers (preset defaults, then the user's parameters) and the seed."""
    from alignctl.runs.config import config_from_dict, load_config
    from alignctl.train.regularisers import parse_reg_spec, with_defaults

    if (config is None) == (task is None):
        raise InputError("give exactly one of --task NAME or --config FILE")
    _check_kinds(task, regs, overrides)
    if task is not None:
        from alignctl.train.presets import PRESETS, preset_reg_defaults

        d = PRESETS.get(task)()
        defaults = preset_reg_defaults(task)
        cfg = config_from_dict(d, Path.cwd(), source=f"preset {task}")
    else:
        cfg = load_config(config)
        defaults = {}
    resolved = []
    for text in regs:
        spec = parse_reg_spec(text)
        if spec["name"] in ("none", "baseline"):
            continue
        resolved.append(with_defaults(spec, defaults.get(spec["name"])))
    d = cfg.to_dict()
    configured = d["train"].get("regularisers") or []
    _refuse_restated(configured, resolved, config)
    d["train"]["regularisers"] = configured + resolved
    if seed is not None:
        d["train"]["seed"] = seed
        if "task" in (d.get("data") or {}):
            d["data"]["seed"] = seed  # the same seed: the same data and initialisation
    if epochs is not None:
        d["train"]["epochs"] = epochs
    for k, v in (overrides or {}).items():
        d["train"][k] = v
    return config_from_dict(d, cfg.base_dir, source="resolved config")


def _check_kinds(task, regs, overrides) -> None:
    """The Python API's arguments of the wrong kind as one InputError each: a string for
    ``regs`` was read letter by letter (``"grokalign"``: nine regularisers 'g', 'r', ...)."""
    if task is not None and not isinstance(task, str):
        raise InputError(f"task must be a preset name, not {type(task).__name__}")
    if not isinstance(regs, (list, tuple)) or not all(isinstance(r, str) for r in regs):
        raise InputError(f"regs must be a list of specs like ['grokalign:lambda=0.01'], not "
                         f"{type(regs).__name__} {short(regs)}")  # fmt: skip
    if overrides is not None and not isinstance(overrides, dict):
        raise InputError(f"overrides must be a mapping of train: keys, not "
                         f"{type(overrides).__name__}")  # fmt: skip


def _refuse_restated(configured: list, resolved: list, config) -> None:
    """A ``--reg`` naming a regulariser the config file already trains with would add a second
    penalty on top of the first (GrokAlign at lambda 0.1 plus 0.01), silently; and a race's
    ``none`` would carry the config's. One line instead, saying where to set it."""
    have = [c.get("name") for c in configured if isinstance(c, dict)]
    for spec in resolved:
        if spec["name"] in have:
            from alignctl.train.regularisers import build_regulariser

            build_regulariser(dict(spec))  # its own mistakes first (n_proj=true)
            raise InputError(
                f"--reg {spec['name']}: {config} already trains with {spec['name']} "
                "(train.regularisers), and a second would add its penalty to the first; set "
                "its parameters in the config, or remove it there and give it with --reg"
            )


def refuse_shared_regularisers(base, config) -> None:
    """A race's settings are its ``--regs`` entries alone: a config whose
    ``train.regularisers`` is not empty would give them to every entry, ``none`` included."""
    specs = base.train.get("regularisers") or []
    if specs:
        names = ", ".join(str(spec.get("name")) for spec in specs)
        raise InputError(f"{config} trains with {names} (train.regularisers), which every "
                         "--regs entry would carry, 'none' included: remove them from the "
                         "config and list the settings in --regs")  # fmt: skip
