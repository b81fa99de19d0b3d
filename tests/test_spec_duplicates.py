"""A key given twice in a spec is an input error, never "the last one wins": regulariser specs
(``--reg``, ``race --regs``, a config's regulariser list, either spelling of ``lambda``) and
every mapping of a YAML config. Hypothesis generates the specs and documents."""

from __future__ import annotations

import string

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.runs.safe_yaml import load_text
from alignctl.train.regularisers import (
    build_regulariser,
    parse_reg_spec,
    split_reg_list,
    with_defaults,
)

KEYS = st.text(string.ascii_lowercase + "_", min_size=1, max_size=8).filter(
    lambda k: k not in ("name", "lam", "lambda")
)
VALUES = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.sampled_from(["0.5", "1e-3", "true", "exact", "fro2"]),
)
NAMES = st.sampled_from(["grokalign", "grokfast", "orthograd", "adversarial", "anything"])


def _text(name: str, pairs) -> str:
    return name + ":" + ",".join(f"{k}={v}" for k, v in pairs)


@settings(max_examples=200, deadline=None)
@given(NAMES, st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=6, unique_by=lambda p: p[0]),
       st.data())  # fmt: skip
def test_a_repeated_key_anywhere_is_an_error_naming_it(name, pairs, data):
    i = data.draw(st.integers(0, len(pairs) - 1))
    value = data.draw(VALUES)
    at = data.draw(st.integers(0, len(pairs)))
    key = pairs[i][0]
    text = _text(name, pairs[:at] + [(key, value)] + pairs[at:])
    with pytest.raises(InputError, match=f"{name}: {key} given twice"):
        parse_reg_spec(text)
    with pytest.raises(InputError, match=f"{key} given twice"):
        build_regulariser(text)


@settings(max_examples=100, deadline=None)
@given(NAMES, st.lists(KEYS, unique=True, max_size=6), st.data())
def test_distinct_keys_parse_to_one_entry_each(name, keys, data):
    values = [data.draw(VALUES) for _ in keys]
    spec = parse_reg_spec(_text(name, list(zip(keys, values, strict=True))))
    assert list(spec) == ["name", *keys] and spec["name"] == name


@pytest.mark.parametrize(
    "text",
    ["grokalign:lambda=0.1,lam=0.2", "grokalign:lam=0.1,lambda=0.1", "grokalign:name=grokfast",
     "grokalign:lambda=0.1,n_proj=2,lambda=0.1"],
)  # fmt: skip
def test_both_spellings_and_the_name_count_as_the_same_key(text):
    with pytest.raises(InputError, match="given twice"):
        parse_reg_spec(text)


def test_a_mapping_with_both_spellings_is_an_error_and_defaults_take_either():
    with pytest.raises(InputError, match="lambda given twice .as lambda and lam"):
        build_regulariser({"name": "grokalign", "lambda": 0.1, "lam": 0.2})
    # a preset's default under one spelling, the user's value under the other: the user wins
    assert build_regulariser({"name": "grokalign", "lam": 0.3}, defaults={"lambda": 1.0}).lam == 0.3
    merged = with_defaults({"name": "grokalign", "lam": 0.3}, {"lambda": 1.0, "n_proj": 2})
    assert merged == {"n_proj": 2, "name": "grokalign", "lam": 0.3}
    # the same spelling keeps the defaults' order (saved configs unchanged)
    assert list(with_defaults({"name": "g", "lambda": 2}, {"lambda": 1, "x": 1})) == [
        "lambda", "x", "name"
    ]  # fmt: skip


SPECS = st.builds(
    _text, NAMES, st.lists(st.tuples(KEYS, VALUES), max_size=3, unique_by=lambda p: p[0])
).map(lambda t: t.rstrip(":"))


@settings(max_examples=200, deadline=None)
@given(st.lists(SPECS, min_size=1, max_size=5))
def test_a_regs_list_splits_back_into_its_entries(specs):
    assert split_reg_list(",".join(specs)) == specs
    assert split_reg_list(";".join(specs)) == specs


def test_a_parameter_before_any_entry_with_parameters_is_an_error():
    for text in ("subsample=0.5,grokalign", "none,subsample=0.5"):
        with pytest.raises(InputError, match="subsample=0.5"):
            split_reg_list(text)


# ---- YAML: any mapping of a config --------------------------------------------------------

SCALARS = st.one_of(st.integers(-5, 5), st.sampled_from(["a", "b", "x y"]), st.booleans())
TREES = st.recursive(
    SCALARS,
    lambda inner: st.dictionaries(KEYS, inner, min_size=1, max_size=4),
    max_leaves=12,
)


def _mappings(tree, path=()):
    if isinstance(tree, dict):
        yield path, tree
        for k, v in tree.items():
            yield from _mappings(v, (*path, k))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(KEYS, TREES, min_size=1, max_size=4), st.data())
def test_a_yaml_key_written_twice_in_any_mapping_is_refused(doc, data):
    assert load_text(yaml.safe_dump(doc), "c.yaml") == doc
    path, target = data.draw(st.sampled_from(list(_mappings(doc))))
    key = data.draw(st.sampled_from(sorted(target)))
    lines = yaml.safe_dump(doc, default_flow_style=True, width=10**6).strip()
    # the same mapping in flow style with ``key: 0`` appended: find it by its own text
    flow = yaml.safe_dump(target, default_flow_style=True, width=10**6).strip()
    twice = flow[:-1] + f", '{key}': 0}}"  # quoted: 'yes' and 'null' are strings too
    text = lines.replace(flow, twice, 1) if path else twice
    with pytest.raises(InputError, match=f"key '{key}' given twice"):
        load_text(text, "c.yaml")


def test_a_key_a_merge_brings_in_may_be_overridden():
    text = "base: &b {subsample: 0.5, n_proj: 2}\nreg:\n  <<: *b\n  subsample: 0.25\n"
    assert load_text(text, "c.yaml")["reg"] == {"subsample": 0.25, "n_proj": 2}


# ---- the commands: one error line, exit 2, nothing written ---------------------------------

MODEL = {"arch": "mlp", "in_features": 4, "hidden": [8], "out_features": 3}


def _config(tmp_path, regularisers=None, text=None):
    import numpy as np

    g = np.random.default_rng(0)
    x = g.normal(size=(20, 4)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x_train=x, y_train=g.integers(0, 3, 20), x_test=x[:5],
             y_test=np.arange(5) % 3)  # fmt: skip
    cfg = {
        "model": MODEL,
        "data": {"path": "data.npz"},
        "train": {"epochs": 1},
        "grokked": {"test_acc": 0.9},
    }  # race refuses a config without a criterion
    if regularisers is not None:
        cfg["train"]["regularisers"] = regularisers
    path = tmp_path / "c.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(cfg))
    return path


def _one_error(r, fragment):
    err = r.stderr.strip()
    assert r.exit_code == 2, (r.stderr, r.exception)
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and fragment in err, err


@pytest.mark.parametrize(
    "reg",
    ["grokalign:subsample=0.5,subsample=0.25", "grokalign:lambda=0.1,lam=0.2",
     "grokfast:window=5,alpha=0.9,window=5"],
)  # fmt: skip
def test_train_and_race_refuse_a_repeated_key(tmp_path, reg):
    cfg, out = _config(tmp_path), tmp_path / "o"
    key = reg.split(":")[1].split("=")[0] if "lam=" not in reg else "lambda"
    r = CliRunner().invoke(app, ["train", "--config", str(cfg), "--out", str(out), "--reg", reg])
    _one_error(r, f"{key} given twice")
    for regs in (f"none,{reg}", f"none;{reg}"):
        r = CliRunner().invoke(app, ["race", "--config", str(cfg), "--regs", regs, "--seeds", "1",
                                     "--out", str(out)])  # fmt: skip
        _one_error(r, f"{key} given twice")
    assert not out.exists()


def test_a_config_regulariser_list_with_a_repeated_key(tmp_path):
    out = tmp_path / "o"
    body = yaml.safe_dump({"model": MODEL, "data": {"path": "data.npz"}})
    text = body + "train:\n  epochs: 1\n  regularisers:\n" \
        "  - {name: grokalign, subsample: 0.5, subsample: 0.25}\n"  # fmt: skip
    both = [{"name": "grokalign", "lambda": 0.1, "lam": 0.2}]
    for cfg in (_config(tmp_path, text=text), _config(tmp_path, both)):
        for argv in (["train", "--out", str(out)], ["race", "--seeds", "1", "--out", str(out)]):
            argv += ["--config", str(cfg)]
            _one_error(CliRunner().invoke(app, argv), "given twice")
    assert not out.exists()


def test_race_takes_parameters_after_a_comma(tmp_path):
    from alignctl.train.race import run_race

    cfg = _config(tmp_path)
    r = run_race(config=cfg, regs=split_reg_list("none,grokalign:lambda=0.1,n_proj=2"), seeds=1,
                 max_epochs=1, out=tmp_path / "o")  # fmt: skip
    assert [row["reg"] for row in r["rows"]] == ["none", "grokalign:lambda=0.1,n_proj=2"]


@pytest.mark.parametrize(
    "text",
    [
        "none,grokalign:subsample=0.0625,every=2",
        "none, grokalign:subsample=0.0625, every=2",
        "none;grokalign:subsample=0.0625, every=2",
        " none ; grokalign : subsample = 0.0625 , every=2 ,",
        "none;grokalign:subsample=0.0625,,every=2",
    ],
)
def test_one_setting_spelled_several_ways_is_one_race_entry(text):
    """qa5: ', b=2' after a comma and after a semicolon gave two labels and two folders, so
    the same setting would have been trained twice."""
    assert split_reg_list(text) == ["none", "grokalign:subsample=0.0625,every=2"]
