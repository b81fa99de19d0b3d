"""The fully resolved config of a new run, from a preset or a file plus regularisers and seed.

Shared by ``alignctl train`` and ``alignctl race`` (and any library caller): a run directory's
``alignctl.yaml`` is this config, so a run describes itself.
"""

from __future__ import annotations

from pathlib import Path

from alignctl.errors import InputError


def build_config(config: Path | None, task: str | None, regs: list[str], seed: int | None,
                 epochs: int | None, overrides: dict | None = None):  # fmt: skip
    """The fully resolved config of a new run: a preset (--task) or a file (--config), the
    regularisers (preset defaults, then the user's parameters) and the seed."""
    from alignctl.runs.config import config_from_dict, load_config
    from alignctl.train.regularisers import parse_reg_spec, with_defaults

    if (config is None) == (task is None):
        raise InputError("give exactly one of --task NAME or --config FILE")
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
    d["train"]["regularisers"] = (d["train"].get("regularisers") or []) + resolved
    if seed is not None:
        d["train"]["seed"] = seed
        if "task" in (d.get("data") or {}):
            d["data"]["seed"] = seed  # the same seed: the same data and initialisation
    if epochs is not None:
        d["train"]["epochs"] = epochs
    for k, v in (overrides or {}).items():
        d["train"][k] = v
    return config_from_dict(d, cfg.base_dir, source="resolved config")
