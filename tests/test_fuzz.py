"""Property-based fuzzing (Hypothesis) of the validators and the CLI (issue 16).

Random ``alignctl.yaml`` documents (nested flow YAML: numbers with nan/inf/huge, strings with
control characters, lists, mappings with the schema's keys, anchors and aliases, billion-laughs
chains, deep nesting, garbage) and random argument lists built from the real option set of
every command. Properties: the config validators return a Config or raise InputError, within a
deadline and a bounded allocation (tracemalloc); the CLI exits 0, 1 or 2, on 2 prints exactly
one stderr line starting ``error: `` with no control character, never a traceback, within a
deadline and a bounded peak RSS. The budgets are lowered here so that an accepted config
cannot allocate much either: the property is that the budget holds, whatever its value.
"""

import contextlib
import json
import os
import resource
import tempfile
import tracemalloc
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.main import get_command
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.runs import validate
from alignctl.runs.config import config_from_dict
from alignctl.runs.models import build_model  # imports torch, outside the traced region
from alignctl.runs.safe_yaml import load_text

# Deadlines are hang guards (a billion-laughs expansion ran for minutes), generous because the
# suite shares 2 cores: Hypothesis fails a test whose example is slow only once.
FAST = settings(
    max_examples=60,
    deadline=timedelta(seconds=30),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
CLI = settings(
    max_examples=20,
    deadline=timedelta(seconds=180),  # a random race took 78 s on the loaded machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large],
)  # fmt: skip
MODEL = {"arch": "mlp", "in_features": 4, "hidden": [8], "out_features": 3}

# ---- random YAML documents ----

SPECIAL = [".nan", ".NaN", ".inf", "-.inf", "1e400", "-1e400", "-0", "0", "1", "-1", "1e11",
           "100000000000", "1.0e+11", "-3", "true", "null", "~", "''", "abc", "0x10", "1_000",
           '"\\e[2J"', '"\\x07bell"', "!!binary aGVsbG8=", "2001-12-14", "*a", "*b", "*zz",
           "!!python/object/apply:os.system ['true']", "mlp", "sparse-parity", "data.npz",
           "adamw", "cross_entropy", "log:3", "grokalign"]  # fmt: skip
KEYS = ["model", "data", "train", "grokked", "verdict", "arch", "hidden", "in_features",
        "out_features", "task", "path", "factory", "kwargs", "n", "n_bits", "k", "dim", "p",
        "epochs", "batch_size", "loss", "optimizer", "lr", "betas", "regularisers", "name",
        "lambda", "fit", "skill", "erank", "train_acc", "seed", "save_schedule", "freeze",
        "activation", "init_scale", "bias", "<<"]  # fmt: skip

scalars = st.one_of(
    st.sampled_from(SPECIAL),
    st.integers(-(10**13), 10**13).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: json.dumps(f).replace("N", ".n")),
    st.text(max_size=8).map(json.dumps),  # control characters included, escaped JSON-style
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=6)).map(json.dumps)


def _collections(children):
    anchored = st.sampled_from(["", "", "&a ", "&b "])
    seq = st.lists(children, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]")
    mapping = st.lists(st.tuples(keys, children), max_size=4).map(
        lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"
    )
    return st.tuples(anchored, st.one_of(seq, mapping)).map("".join)


nodes = st.recursive(scalars, _collections, max_leaves=25)


def _laughs(levels: int, width: int) -> str:
    out = ['verdict: {l0: &l0 "lol"}']
    for i in range(1, levels + 1):
        out.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(out) + "\n"


def _schema_doc(sections) -> str:
    return "\n".join(f"{k}: {v}" for k, v in sections) + "\n"


documents = st.one_of(
    st.lists(
        st.tuples(st.sampled_from(["model", "data", "train", "grokked", "verdict"]), nodes),
        max_size=5,
    ).map(_schema_doc),  # fmt: skip
    nodes,
    st.tuples(st.integers(1, 12), st.integers(1, 12)).map(lambda lw: _laughs(*lw)),
    st.integers(1, 30_000).map(lambda n: "model: " + "[" * n + "]" * n + "\n"),
    st.text(max_size=60),
)


@pytest.fixture
def small_budgets(monkeypatch):
    monkeypatch.setattr(validate, "MAX_PARAMETERS", 10**6)
    monkeypatch.setattr(validate, "MAX_DATA_ELEMENTS", 10**6)


@FAST
@given(doc=documents)
def test_random_configs_are_a_config_or_an_input_error(doc, small_budgets):
    tracemalloc.start()
    try:
        cfg = config_from_dict(load_text(doc, "fuzz.yaml"), Path("."), source="fuzz.yaml")
        if cfg.model:
            build_model(cfg.model, Path("."))
    except InputError as e:
        assert str(e).strip()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 256 << 20, peak  # Python-level allocations; tensors are capped by the budget


# ---- the CLI, in process ----


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny valid run, a tiny training config, a file and a folder to point outputs at."""
    import torch
    from safetensors.torch import save_file

    from alignctl.runs.models import build_model

    root = tmp_path_factory.mktemp("fuzz")
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    g = np.random.default_rng(0)
    x = g.normal(size=(12, 4)).astype(np.float32)
    np.savez(run / "data.npz", x_train=x, y_train=g.integers(0, 3, 12), x_test=x[:4],
             y_test=np.arange(4) % 3)  # fmt: skip
    torch.manual_seed(0)
    sd = build_model(MODEL, run).state_dict()
    save_file(
        {k: v.contiguous() for k, v in sd.items()}, str(run / "checkpoints" / "step_1.safetensors")
    )
    (run / "alignctl.yaml").write_text(
        yaml.safe_dump({"model": MODEL, "data": {"path": "data.npz"}})
    )
    tiny = root / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({
        "model": MODEL, "data": {"path": str(run / "data.npz")},
        "train": {"epochs": 1, "batch_size": 12},
    }))  # fmt: skip
    (root / "file.txt").write_text("a file\n")
    (root / "folder").mkdir()
    return {"root": root, "run": run, "tiny": tiny}


@contextlib.contextmanager
def _inside(folder: Path):
    """Run in ``folder``: a random relative path (``--csv cuda``) must land there, not in the
    repository."""
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def check_cli_result(r) -> None:
    assert r.exit_code in (0, 1, 2), (r.exit_code, r.stderr, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.stderr + r.stdout
    if r.exit_code == 2:
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        assert lines[0].isprintable(), lines[0]


def _run_config(world, doc: str):
    folder = Path(tempfile.mkdtemp(dir=world["root"]))
    for name in ("data.npz", "checkpoints"):
        (folder / name).symlink_to(world["run"] / name)
    (folder / "alignctl.yaml").write_text(doc, encoding="utf-8", errors="surrogatepass")
    return folder


@CLI
@given(doc=documents)
def test_cli_on_random_configs(world, doc, small_budgets):
    before = _rss_kib()
    try:
        folder = _run_config(world, doc)
    except UnicodeEncodeError:
        return
    with _inside(folder):
        r = CliRunner().invoke(app, ["analyze", str(folder), "--quiet", "--metrics", "fast"],
                               env={"GITHUB_STEP_SUMMARY": None})  # fmt: skip
    check_cli_result(r)
    assert _rss_kib() - before < 1 << 20, "peak RSS grew by over 1 GiB"


def _options() -> dict[str, list[str]]:
    """Every option name of every command, from the real app."""
    group = get_command(app)
    return {name: sorted(o for p in cmd.params for o in [*p.opts, *p.secondary_opts]
                         if o.startswith("-") and o not in ("--help", "--workers"))
            for name, cmd in group.commands.items()}  # fmt: skip


OPTIONS = _options()
VALUES = ["0", "-1", "1", "2", "3", "nan", "inf", "-inf", "1e400", "x", "", "-", "fast",
          "full", "centroid_alignment", "test", "train", "cpu", "cuda", "auto", "none",
          "grokalign", "grokalign:lambda=nan", "centroid_alignment=0.5", "centroid_alignment=nan",
          "jacobian_erank=inf", "nope=1", "robust", "memorising", "log:2", "log:0",
          "\x1b[2J\x1b[31m", "a" * 300, "@FILE", "@FOLDER", "@RUN", "@NEW"]  # fmt: skip


def _argv(world, command: str, pairs: list[tuple[str, str | None]], new: Path) -> list[str]:
    subst = {"@FILE": str(world["root"] / "file.txt"), "@FOLDER": str(world["root"] / "folder"),
             "@RUN": str(world["run"]), "@NEW": str(new / "x")}  # fmt: skip
    fixed = {
        "analyze": ["analyze", str(world["run"])],
        "train": ["train", "--config", str(world["tiny"]), "--epochs", "1", "--out", str(new)],
        "race": [
            "race",
            "--config",
            str(world["tiny"]),
            "--seeds",
            "1",
            "--max-epochs",
            "1",
            "--regs",
            "none",
            "--out",
            str(new),
        ],  # fmt: skip
        "metrics": ["metrics"],
        "compare": ["compare", str(world["run"]), str(world["run"]), "--metrics", "fast"],
        "geometry": [
            "geometry",
            str(world["run"]),
            "--out",
            str(new) + ".png",
            "--resolution",
            "32",
        ],
    }[command]
    argv = list(fixed)
    for opt, value in pairs:
        argv.append(opt)
        if value is not None:
            argv.append(subst.get(value, value))
    return argv


arg_lists = st.sampled_from(sorted(OPTIONS)).flatmap(
    lambda cmd: st.tuples(
        st.just(cmd),
        st.lists(
            st.tuples(
                st.sampled_from(OPTIONS[cmd] + ["--sampels", "--\x1b[2J", "-z", "extra"]),
                st.none() | st.sampled_from(VALUES),
            ),
            max_size=4,
        ),
    )
)


@CLI
@given(case=arg_lists)
def test_cli_on_random_argument_lists(world, case, small_budgets):
    command, pairs = case
    before = _rss_kib()
    new = Path(tempfile.mkdtemp(dir=world["root"])) / "out"
    with _inside(new.parent):
        r = CliRunner().invoke(app, _argv(world, command, pairs, new),
                               env={"GITHUB_STEP_SUMMARY": None})  # fmt: skip
    check_cli_result(r)
    assert _rss_kib() - before < 1 << 20, "peak RSS grew by over 1 GiB"
