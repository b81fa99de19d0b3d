"""docs/config.md's key tables and the README's name tables are the code's: the validators'
keys and defaults (TOP_KEYS, TRAIN_DEFAULTS, OPTIMIZER_DEFAULTS, GROKKED_DEFAULTS,
CHECKPOINT_KEYS, the verdict thresholds), the model, task and regulariser registries' parameters
and defaults, the presets (their GrokAlign lambda and grokked criterion), the losses, verdicts,
actions and threshold defaults. Generated from the code; companion of test_docs_heldout4.py."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
import yaml

from alignctl.report.verdict import DEFAULTS as VERDICT_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIG_MD = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------- docs/config.md's tables
def _table(text: str, heading: str) -> list[list[str]]:
    """Rows (cells, outer backticks kept) of the first table under ``heading``."""
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("|")][2:]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", r)[1:-1]] for r in rows]


def _value(text: str):
    v = yaml.safe_load(text.strip("`"))
    try:
        return float(v) if isinstance(v, str) else v  # YAML 1.1 reads 1e-8 as a string
    except ValueError:
        return v


def _keys_and_defaults(cell: str) -> dict:
    """`name` or `name: default` items of a parameters cell, outside parentheses."""
    flat = re.sub(r"\([^()]*\)", "", cell)
    out = {}
    for item in re.findall(r"`([^`]+)`", flat):
        k, _, d = item.partition(":")
        out[k.strip()] = _value(d) if d else inspect.Parameter.empty
    return out


def test_config_top_level_train_grokked_and_checkpoint_tables_are_the_validators():
    from alignctl.runs import config as c

    assert [r[0].strip("`") for r in _table(CONFIG_MD, "## Top level")] == list(c.TOP_KEYS)
    want = {k: v for k, v in c.TRAIN_DEFAULTS.items() if k != "optimizer"}
    want |= {f"optimizer.{k}": v for k, v in c.OPTIMIZER_DEFAULTS.items()}
    got = {r[0].strip("`"): _value(r[1]) for r in _table(CONFIG_MD, "## `train`")}
    assert got == want
    got = {r[0].strip("`"): _value(r[1]) for r in _table(CONFIG_MD, "## `grokked`")}
    assert got == c.GROKKED_DEFAULTS
    rows = _table(CONFIG_MD, "## `checkpoint`")
    assert tuple(r[0].strip("`") for r in rows) == c.CHECKPOINT_KEYS
    # what the tables document, the validator accepts, and fills in as documented
    documented = {k: v for k, v in want.items() if "." not in k}
    cfg = c.config_from_dict({"train": {**documented, "optimizer": c.OPTIMIZER_DEFAULTS},
                              "grokked": got, "checkpoint": {"weights": "raw"}}, ROOT)  # fmt: skip
    assert cfg.train == c.TRAIN_DEFAULTS and cfg.grokked == c.GROKKED_DEFAULTS
    verdict_row = _table(CONFIG_MD, "## Top level")[c.TOP_KEYS.index("verdict")][1]
    assert set(re.findall(r"`(\w+)`", verdict_row)) == set(VERDICT_DEFAULTS)


def _signature(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()}


@pytest.mark.parametrize("heading, registry", [("### Built-in architectures", "MODELS"),
                                               ("### Built-in tasks", "TASKS")])  # fmt: skip
def test_config_architecture_and_task_tables_are_the_registries(heading, registry):
    reg = getattr(__import__("alignctl"), registry)
    rows = {r[0].strip("`"): r[1] for r in _table(CONFIG_MD, heading)}
    assert sorted(rows) == reg.names()
    for name, cell in rows.items():
        m = re.match(r"as `([\w-]+)`, (\w+) fixed", cell)
        if m:  # quadratic-mlp: "as `mlp`, activation fixed to z^2"
            doc = {k: v for k, v in _keys_and_defaults(rows[m[1]]).items() if k != m[2]}
        else:
            doc = _keys_and_defaults(cell)
        assert doc == _signature(reg.get(name)), name


def _named_params(cell: str) -> dict[str, str]:
    """{name: the text in the parentheses after it} for each `name` outside parentheses."""
    out, depth, i = {}, 0, 0
    while i < len(cell):
        ch = cell[i]
        depth += (ch == "(") - (ch == ")")
        if ch == "`" and depth == 0:
            end = cell.index("`", i + 1)
            name, i, inside = cell[i + 1 : end], end + 1, ""
            if cell.startswith(" (", i):
                j, d = i + 1, 0
                while True:
                    d += (cell[j] == "(") - (cell[j] == ")")
                    if d == 0:
                        break
                    j += 1
                inside, i = cell[i + 2 : j], j + 1
            out[name] = inside
            continue
        i += 1
    return out


def test_readme_regulariser_table_is_the_registry():
    from alignctl import REGULARISERS

    section = README.split("### Regularisers", 1)[1].split("\n\n", 2)[1]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")][2:]
    rows = {ln.split(" | ")[0][2:].strip("`"): ln.split(" | ")[2] for ln in lines}
    assert sorted(rows) == REGULARISERS.names()
    for name, cell in rows.items():
        m = re.fullmatch(r"as (\w+)", cell.strip(" |"))
        doc = _named_params(rows[m[1]] if m else cell.strip(" |"))
        sig = _signature(REGULARISERS.get(name))
        sig = {("lambda" if k == "lam" else k): v for k, v in sig.items()}
        assert set(doc) == set(sig), name
        for k, v in sig.items():
            first = re.sub(r"^preset's, else ", "", doc[k]).lstrip("`")
            assert _value(re.split(r"[`,:;) ]", first)[0]) == v, (name, k, doc[k])


# ---------------------------------------------------------------- names
def _actions() -> set[str]:
    src = (ROOT / "src" / "alignctl" / "report" / "recommend.py").read_text()
    return {
        v.value
        for node in ast.walk(ast.parse(src))
        if isinstance(node, ast.Dict)
        for k, v in zip(node.keys, node.values, strict=True)
        if isinstance(k, ast.Constant) and k.value == "action" and isinstance(v, ast.Constant)
    }


def test_presets_losses_verdicts_actions_and_thresholds_are_the_codes():
    from alignctl import LOSSES, PRESETS
    from alignctl.report.verdict import ORDER
    from alignctl.train.presets import preset_reg_defaults

    rows = _table(README, "### Presets")
    assert sorted(r[0].strip("`") for r in rows) == PRESETS.names()
    listed = CONFIG_MD.split("The presets of `alignctl train --task NAME` (", 1)[1].split(")")[0]
    assert sorted(re.findall(r"`([\w-]+)`", listed)) == PRESETS.names()
    for r in rows:
        name = r[0].strip("`")
        assert float(r[4]) == preset_reg_defaults(name)["grokalign"]["lambda"], name
        cfg = PRESETS.get(name)()
        want = {k: v for k, v in cfg["grokked"].items() if v is not None}
        said = {}
        for part in r[5].split(", "):
            m = re.match(r"([\w -]+?) > (\d+)%", part)
            for who in re.split(r" and ", m[1]) if m else []:
                key = {"noisy-test accuracy": "noise_acc", "test accuracy": "test_acc"}.get(
                    who, f"{who.split()[0]}_acc")  # fmt: skip
                said[key] = int(m[2]) / 100
        assert said == want, name
    loss_line = README.split("The loss is one of ", 1)[1].split("\n\n")[0]
    assert sorted(re.findall(r"`(\w+)`", loss_line)) == LOSSES.names()
    verdicts = README.split("### Verdicts and the recommendation", 1)[1].split("### JSON", 1)[0]
    for v in (*ORDER, "diverged", "uncertain"):
        assert f"`{v}`" in verdicts, v
    assert {f"`{a}`" for a in _actions()} <= set(re.findall(r"`[\w-]+`", verdicts)), _actions()
    for key, default in VERDICT_DEFAULTS.items():
        m = re.search(rf"`{key}`(?: \(|, )(-?[\d.]+)", verdicts)
        assert m and float(m[1]) == default, key
