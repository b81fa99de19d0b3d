"""One regulariser setting reads the same wherever a spec is accepted: ``--reg``, ``race
--regs`` (',' and ';'), ``alignctl.yaml``'s ``train.regularisers`` (a spec string or a
mapping, its string values read as the command line reads them) and ``build_regulariser``;
a bad value is the same one-line error everywhere, naming the regulariser."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _configs import grokalign_config
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from alignctl import build_regulariser
from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.runs.config import config_from_dict
from alignctl.train.regularisers import split_reg_list

SETTINGS = st.fixed_dictionaries(
    {"every": st.integers(1, 9), "subsample": st.sampled_from([0.0625, 0.125, 0.5, 1.0, 0.3]),
     "n_proj": st.sampled_from([1, 2, 3, "exact"]), "norm": st.sampled_from(["fro", "fro2"]),
     "lambda": st.sampled_from([0.1, 1.0, 0.001])}
)  # fmt: skip
ATTRS = ("lam", "every", "subsample", "n_proj", "norm", "eps", "path")


def _state(reg) -> tuple:
    return tuple(getattr(reg, a) for a in ATTRS)


def _text(params: dict) -> str:
    return "grokalign:" + ",".join(f"{k}={v}" for k, v in params.items())


def _from_config(entry) -> object:
    d = grokalign_config()
    d["train"]["regularisers"] = [entry]
    (spec,) = config_from_dict(d, ".").train["regularisers"]
    return build_regulariser(dict(spec))


@settings(max_examples=60, deadline=None)
@given(SETTINGS)
def test_every_entry_point_builds_the_same_regulariser(params):
    text = _text(params)
    want = _state(build_regulariser(text))
    assert _state(build_regulariser({"name": "grokalign", **params})) == want
    assert _state(_from_config(text)) == want  # the spec string in alignctl.yaml
    assert _state(_from_config({"name": "grokalign", **params})) == want
    # YAML 1.1 reads 1e-3 (no dot) as a string: a mapping's string values read as --reg's
    as_strings = {k: str(v) for k, v in params.items()}
    assert _state(_from_config({"name": "grokalign", **as_strings})) == want
    for sep in (",", ";"):
        (entry,) = split_reg_list(f"none{sep}{text}")[1:]
        assert _state(build_regulariser(entry)) == want


@pytest.mark.parametrize("value, want", [(2.0, 2), ("2", 2), ("1e1", 10), ("2.0", 2)])
def test_a_whole_number_is_a_count_where_one_is_expected(value, want):
    """As for the config's integers (docs/config.md): 2.0 and 1e1 where a count is expected."""
    assert _from_config({"name": "grokalign", "every": value}).every == want
    assert build_regulariser(f"grokalign:every={value}").every == want
    assert build_regulariser("grokalign:n_proj=2.0").n_proj == 2


@pytest.mark.parametrize("value", [2.5, "2.5", 0, "0", "nan", "true", 1e9, "1e9"])
def test_a_count_that_is_not_one_is_still_an_error(value):
    with pytest.raises(InputError, match="regulariser grokalign: every"):
        _from_config({"name": "grokalign", "every": value})


def test_both_spellings_in_a_mapping_name_the_regulariser():
    """The message said 'regulariser None' (the name was already taken out of the spec)."""
    for spec in ({"name": "grokalign", "lambda": 0.1, "lam": 0.2},
                 {"name": "grokalign", "lam": 0.2, "lambda": 0.1}):  # fmt: skip
        with pytest.raises(InputError, match=r"^regulariser grokalign: (lam|lambda) given twice"):
            build_regulariser(spec)


BAD = ["grokalign:every=0", "grokalign:every=2.5", "grokalign:subsample=0",
       "grokalign:subsample=1.5", "grokalign:subsample=nan", "grokalign:every=2,every=2",
       "grokalign:subsample=0.0625,evry=2", ":every=2", "grokalign:every"]  # fmt: skip


def _cli_config(tmp_path, entry) -> list[str]:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x_train=rng.random((20, 10), dtype=np.float32),
             y_train=rng.integers(0, 2, 20))  # fmt: skip
    d = grokalign_config()
    d["data"] = {"path": str(tmp_path / "data.npz")}
    d["train"]["regularisers"] = [entry]
    (tmp_path / "alignctl.yaml").write_text(json.dumps(d))
    return ["--config", str(tmp_path / "alignctl.yaml")]


@pytest.mark.parametrize("bad", BAD)
def test_a_bad_spec_in_alignctl_yaml_is_one_line_and_nothing_written(tmp_path, bad):
    args = ["train", *_cli_config(tmp_path, bad), "--out", str(tmp_path / "o"), "--quiet"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, (r.stderr, r.exception)
    err = r.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_the_spec_string_in_alignctl_yaml_trains_as_reg_does(tmp_path):
    spec = "grokalign:subsample=0.25,every=2,lambda=0.1"
    args = ["train", *_cli_config(tmp_path, spec), "--epochs", "1", "--quiet"]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, (r.stderr, r.exception)
    saved = (tmp_path / "o" / "alignctl.yaml").read_text()
    assert "subsample: 0.25" in saved and "every: 2" in saved
