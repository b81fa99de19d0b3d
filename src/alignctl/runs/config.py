"""``alignctl.yaml``: reading, validating and writing run configs (schema: docs/config.md).

Top-level keys: ``model``, ``data`` (checked by :func:`alignctl.models.build_model` and
:func:`alignctl.tasks.load_data`), ``train`` and ``grokked`` (validated, defaults filled in
here), ``verdict`` (validated by the verdict rules). ``to_dict`` is fully resolved (defaults
filled in, paths absolute), so a config copied into a run folder still finds its files.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from alignctl.errors import InputError, short
from alignctl.runs.atomic import atomic_write_text
from alignctl.runs.config_fields import integer, known_keys, mapping, number
from alignctl.runs.limits import expand_user, read_text_capped
from alignctl.runs.validate import refuse_huge_integers

TOP_KEYS = ("model", "data", "train", "grokked", "verdict", "checkpoint")
CHECKPOINT_KEYS = ("weights", "state_key")  # which weights analyze reads (docs/config.md)
LOSSES = ("cross_entropy", "mse", "stablemax", "logistic")
OPTIMIZERS = ("adamw", "sgd")
OPTIMIZER_DEFAULTS = {
    "name": "adamw", "lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.999], "momentum": 0.0,
}  # fmt: skip
TRAIN_DEFAULTS = {
    "epochs": 1000, "batch_size": None, "loss": "cross_entropy", "optimizer": OPTIMIZER_DEFAULTS,
    "regularisers": [], "seed": 0, "eval_every": 1, "save_every": None, "save_schedule": None,
    "freeze": [], "on_nan": "stop", "stop_when_grokked": False,
}  # fmt: skip
# what torch.manual_seed and torch.Generator.manual_seed accept (outside: an OverflowError)
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
ON_NAN = ("stop", "continue")  # what a run does when its loss or weights become NaN/inf
GROKKED_DEFAULTS = {"train_acc": None, "test_acc": None, "noise_acc": None}


@dataclass
class Config:
    model: dict | None
    data: dict | None
    train: dict
    grokked: dict
    verdict: dict = field(default_factory=dict)
    checkpoint: dict = field(default_factory=dict)  # {weights: raw|ema, state_key: KEY}
    path: Path | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    train_recorded: bool = True  # the file had a train section (else train = the defaults)

    def to_dict(self) -> dict:
        """The resolved config as plain YAML-serialisable data (paths made absolute)."""
        out: dict = {}
        for key in ("model", "data"):
            section = getattr(self, key)
            if section is not None:
                out[key] = _absolute_paths(section, Path(self.base_dir))
        out["train"] = copy.deepcopy(self.train)
        out["grokked"] = dict(self.grokked)
        out["verdict"] = copy.deepcopy(self.verdict)
        if self.checkpoint:
            out["checkpoint"] = dict(self.checkpoint)
        return out


def _absolute_paths(section: dict, base_dir: Path) -> dict:
    """Copy of a model/data section with its file references resolved against ``base_dir``."""
    out = copy.deepcopy(section)
    for key in ("path", "root"):
        if isinstance(out.get(key), str):
            p = expand_user(out[key])
            out[key] = str(p if p.is_absolute() else (base_dir / p).resolve())
    spec = out.get("factory")
    if isinstance(spec, str) and ":" in spec:
        target, name = spec.rsplit(":", 1)
        if target.endswith(".py") or "/" in target or "\\" in target:
            p = expand_user(target)
            out["factory"] = f"{p if p.is_absolute() else (base_dir / p).resolve()}:{name}"
    return out


# ---- value checkers: each returns the normalised value or raises InputError ----


def _optimizer(v, where: str) -> dict:
    if isinstance(v, str):
        v = {"name": v}
    d = mapping(v, where)
    known_keys(d, OPTIMIZER_DEFAULTS, where)
    o = {**copy.deepcopy(OPTIMIZER_DEFAULTS), **d}
    o["name"] = str(o["name"]).lower()
    if o["name"] not in OPTIMIZERS:
        raise InputError(f"{where}.name: unknown optimizer {short(o['name'])}; valid: adamw, sgd")
    o["lr"] = number(o["lr"], f"{where}.lr", lo=0.0, strict_lo=True)
    o["weight_decay"] = number(o["weight_decay"], f"{where}.weight_decay", lo=0.0)
    o["momentum"] = number(o["momentum"], f"{where}.momentum", lo=0.0)
    b = o["betas"]
    if not isinstance(b, (list, tuple)) or len(b) != 2:
        raise InputError(f"{where}.betas must be a list of two numbers, got {short(b)}")
    o["betas"] = [number(x, f"{where}.betas", lo=0.0) for x in b]
    if max(o["betas"]) >= 1.0:
        raise InputError(f"{where}.betas must be in [0, 1), got {short(b)}")
    return o


def _regularisers(v, where: str) -> list[dict]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise InputError(f"{where} must be a list of {{name: ..., params...}} mappings")
    from alignctl.runs.regspec import parse_reg_spec, read_spec_values

    out = []
    for i, r in enumerate(v):
        try:  # a string is the command line's NAME[:key=value,...], read as --reg reads it
            r = parse_reg_spec(r) if isinstance(r, str) else r
        except InputError as e:
            raise InputError(f"{where}[{i}]: {e}") from None
        if not isinstance(r, dict) or not isinstance(r.get("name"), str):
            raise InputError(f"{where}[{i}] must be a mapping with a 'name', got {short(r)}")
        r = read_spec_values(r)
        # the penalty's weight, under either spelling, is read outside training too (the
        # recommendation cites it): a number >= 0 here; the rest is the regulariser's own
        for key in ("lambda", "lam"):
            if key in r:
                r[key] = number(r[key], f"{where}[{i}]: {short(r['name'])[1:-1]}: {key}", lo=0.0)
        out.append(r)
    return out


def _train(v, where: str) -> dict:
    d = mapping(v, where)
    known_keys(d, TRAIN_DEFAULTS, where)
    t = {**copy.deepcopy(TRAIN_DEFAULTS), **d}
    t["epochs"] = integer(t["epochs"], f"{where}.epochs", lo=1)
    t["batch_size"] = integer(t["batch_size"], f"{where}.batch_size", lo=1, optional=True)
    t["seed"] = integer(t["seed"], f"{where}.seed", lo=SEED_MIN, hi=SEED_MAX)
    t["eval_every"] = integer(t["eval_every"], f"{where}.eval_every", lo=1)
    t["save_every"] = integer(t["save_every"], f"{where}.save_every", lo=1, optional=True)
    if t["loss"] not in LOSSES:
        raise InputError(
            f"{where}.loss: unknown loss {short(t['loss'])}; valid: {', '.join(LOSSES)}"
        )
    t["optimizer"] = _optimizer(t["optimizer"], f"{where}.optimizer")
    t["regularisers"] = _regularisers(t["regularisers"], f"{where}.regularisers")
    s = t["save_schedule"]
    if s is not None:
        kind, _, k = str(s).partition(":")
        if kind != "log" or not k.isdigit() or int(k) < 1:
            raise InputError(f"{where}.save_schedule: expected log:K (e.g. log:50), got {short(s)}")
    f = t["freeze"]
    if isinstance(f, str):
        f = [f]
    if not isinstance(f, list) or not all(isinstance(x, str) for x in f):
        raise InputError(
            f"{where}.freeze must be a list of parameter-name prefixes, got {short(f)}"
        )
    t["freeze"] = f
    if not isinstance(t["stop_when_grokked"], bool):
        raise InputError(f"{where}.stop_when_grokked: expected true or false, got "
                         f"{short(t['stop_when_grokked'])}")  # fmt: skip
    if t["on_nan"] not in ON_NAN:
        valid = ", ".join(ON_NAN)
        raise InputError(f"{where}.on_nan: expected one of {valid}, got {short(t['on_nan'])}")
    return t


def _grokked(v, where: str) -> dict:
    d = mapping(v, where)
    known_keys(d, GROKKED_DEFAULTS, where)
    g = {**GROKKED_DEFAULTS, **d}
    for k, x in g.items():
        if x is not None:
            g[k] = number(x, f"{where}.{k}", lo=0.0)
            if g[k] > 1.0:
                raise InputError(f"{where}.{k} is a fraction in [0, 1], got {short(x)}")
    return g


def _checkpoint(v, where: str) -> dict:
    d = mapping(v, where)
    known_keys(d, CHECKPOINT_KEYS, where)
    if d.get("weights") is not None and d["weights"] not in ("raw", "ema"):
        raise InputError(f"{where}.weights must be raw or ema, got {short(d['weights'])}")
    key = d.get("state_key")
    if key is not None and (not isinstance(key, str) or not key.strip(". ")):
        raise InputError(f"{where}.state_key must be a key name (e.g. model_ema), got {short(key)}")
    return {k: v for k, v in d.items() if v is not None}


def _verdict(v, where: str) -> dict:
    """Threshold overrides: names (checked by the verdict rules) -> finite numbers."""
    out = {}
    for k, x in mapping(v, where).items():
        if not isinstance(k, str):
            raise InputError(f"{where}: keys must be threshold names, got {short(k)}")
        out[k] = number(x, f"{where}.{k}")
    return out


def _section(d: dict, key: str, choices: tuple[str, ...], source: str) -> dict | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise InputError(f"{source}: {key} must be a mapping, got {type(v).__name__}")
    if sum(c in v for c in choices) != 1:
        raise InputError(f"{source}: {key} needs exactly one of {', '.join(choices)}")
    return copy.deepcopy(v)


def config_from_dict(d: dict, base_dir: Path, source: str = "config") -> Config:
    """Validate a config mapping and fill in every default."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise InputError(f"{source}: the top level must be a mapping, got {type(d).__name__}")
    known_keys(d, TOP_KEYS, source)
    refuse_huge_integers(d, source)
    return Config(
        model=_section(d, "model", ("arch", "factory"), source),
        data=_section(d, "data", ("task", "path", "factory"), source),
        train=_train(d.get("train"), f"{source}: train"),
        grokked=_grokked(d.get("grokked"), f"{source}: grokked"),
        verdict=_verdict(d.get("verdict"), f"{source}: verdict"),
        checkpoint=_checkpoint(d.get("checkpoint"), f"{source}: checkpoint"),
        base_dir=Path(base_dir),
        train_recorded=d.get("train") is not None,
    )


def load_config(path: Path) -> Config:
    """Read and validate ``alignctl.yaml``; relative paths inside are relative to its folder.
    Size, nesting and aliases are limited (:mod:`alignctl.runs.safe_yaml`)."""
    from alignctl.runs.safe_yaml import MAX_BYTES, load_text

    path = Path(path)
    if not path.exists():
        raise InputError(f"config file {path} not found")
    # a regular file, size capped before reading; then YAML with limits on aliases and depth
    d = load_text(read_text_capped(path, "config file", limit=MAX_BYTES), str(path))
    cfg = config_from_dict(d, path.resolve().parent, source=str(path))
    cfg.path = path
    return cfg


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
    atomic_write_text(Path(path), text)
