"""Incremental analysis: a re-run measures nothing it has measured; the key covers the
checkpoint's bytes, the data, the metrics and the options; corrupt or stale entries are
recomputed, never trusted; --no-cache and --cache DIR."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.runs.checkpoints import write_checkpoint

runner = CliRunner()
MODEL = {"arch": "mlp", "in_features": 5, "hidden": [12], "out_features": 3}


def make_run(root: Path, n_checkpoints=3, seed=1) -> Path:
    root.mkdir(parents=True)
    g = np.random.default_rng(seed)
    x = g.normal(size=(40, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    np.savez(root / "data.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    cfg = {"model": MODEL, "data": {"path": "data.npz"}}
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    for step in range(n_checkpoints):
        add_checkpoint(root, step)
    return root


def add_checkpoint(root: Path, step: int, seed: int | None = None) -> Path:
    from alignctl.runs.models import build_model

    torch.manual_seed(step if seed is None else seed)
    path = root / "checkpoints" / f"step_{step:08d}.safetensors"
    meta = {"step": step, "alignctl_version": "test"}  # as alignctl train writes them
    write_checkpoint(path, build_model(MODEL, root).state_dict(), meta)
    return path


@pytest.fixture(autouse=True)
def default_cache_on(monkeypatch):
    monkeypatch.delenv("ALIGNCTL_CACHE", raising=False)  # tests/conftest.py turns it off


def analyze(path, *extra):
    r = runner.invoke(app, ["analyze", str(path), "--json", "-", *extra])
    assert r.exit_code == 0, (r.stdout, r.stderr)
    return json.loads(r.stdout)


def numbers(report):
    return [{k: v for k, v in c.items() if k != "seconds"} for c in report["checkpoints"]]


def test_a_rerun_measures_nothing_and_reports_the_same(tmp_path):
    run = make_run(tmp_path / "r")
    first = analyze(run)
    assert first["cache"]["hits"] == 0 and first["cache"]["misses"] == 3
    again = analyze(run)
    assert again["cache"]["hits"] == 3 and again["cache"]["misses"] == 0
    fresh = analyze(run, "--no-cache")
    assert "cache" not in fresh
    assert numbers(again) == numbers(first) == numbers(fresh)
    assert again["recommendation"] == fresh["recommendation"]
    assert len(list((run / ".alignctl-cache").glob("*.json"))) == 3


def test_only_new_or_changed_checkpoints_are_measured(tmp_path):
    run = make_run(tmp_path / "r")
    analyze(run)
    add_checkpoint(run, 3)
    r = analyze(run)
    assert (r["cache"]["hits"], r["cache"]["misses"]) == (3, 1)
    r = analyze(run)
    assert (r["cache"]["hits"], r["cache"]["misses"]) == (4, 0)
    add_checkpoint(run, 4)
    add_checkpoint(run, 1, seed=99)  # same name, other weights: a stale entry must not be used
    r = analyze(run)
    assert (r["cache"]["hits"], r["cache"]["misses"]) == (3, 2)
    assert numbers(r) == numbers(analyze(run, "--no-cache"))


@pytest.mark.parametrize(
    "change",
    [
        ["--samples", "10"],
        ["--metrics", "fast"],
        ["--split", "test"],
        ["--batch-size", "7"],
        ["--robustness"],
    ],
)
def test_options_and_metrics_are_part_of_the_key(tmp_path, change):
    run = make_run(tmp_path / "r", n_checkpoints=2)
    analyze(run)
    r = analyze(run, *change)
    assert r["cache"]["hits"] == 0 and r["cache"]["misses"] == 2
    assert numbers(r) == numbers(analyze(run, *change, "--no-cache"))


def test_the_data_is_part_of_the_key(tmp_path):
    run = make_run(tmp_path / "r", n_checkpoints=2)
    analyze(run)
    with np.load(run / "data.npz") as z:
        arrays = dict(z)
    arrays["x_train"][0, 0] += 1.0
    np.savez(run / "data.npz", **arrays)
    r = analyze(run)
    assert r["cache"]["hits"] == 0
    assert numbers(r) == numbers(analyze(run, "--no-cache"))


def _corrupt_number(text: str) -> str:
    doc = json.loads(text)
    doc["entry"]["metrics"]["centroid_alignment"] = 0.123456  # still valid JSON and shape
    return json.dumps(doc)


@pytest.mark.parametrize(
    "corrupt",
    [
        _corrupt_number,
        lambda t: t[: len(t) // 2],  # truncated
        lambda t: t.replace('"diverged":false', '"diverged":NaN'),  # not strict JSON
        lambda t: "",
        lambda t: json.dumps({**json.loads(t), "key": "0" * 64}),  # another key's entry
        lambda t: t.rstrip() + " " * (64 << 20) + "\n",  # valid, but beyond any entry's size
    ],
    ids=["changed number", "truncated", "NaN", "empty", "wrong key", "oversized"],
)
def test_corrupt_entries_are_recomputed(tmp_path, corrupt):
    run = make_run(tmp_path / "r")
    want = analyze(run)
    victim = sorted((run / ".alignctl-cache").glob("*.json"))[0]
    victim.write_text(corrupt(victim.read_text()))
    r = analyze(run)
    assert (r["cache"]["hits"], r["cache"]["misses"], r["cache"]["invalid"]) == (2, 1, 1)
    assert numbers(r) == numbers(want)
    assert analyze(run)["cache"]["hits"] == 3  # rewritten, valid again


def test_cache_dir_option_and_an_unwritable_cache(tmp_path):
    run = make_run(tmp_path / "r", n_checkpoints=2)
    elsewhere = tmp_path / "cache"
    analyze(run, "--cache", str(elsewhere))
    assert not (run / ".alignctl-cache").exists() and len(list(elsewhere.glob("*.json"))) == 2
    assert analyze(run, "--cache", str(elsewhere))["cache"]["hits"] == 2
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = runner.invoke(app, ["analyze", str(run), "--cache", str(blocker), "--json", "-"])
    assert r.exit_code == 0 and "cache off" in r.stderr


def test_the_default_cache_adds_one_folder_and_changes_nothing_else(tmp_path):
    run = make_run(tmp_path / "r")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    first = analyze(run)
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert {p: b for p, b in after.items() if ".alignctl-cache" not in p.parts} == before
    assert first["cache"]["dir"] == str(run / ".alignctl-cache")
    assert analyze(run)["cache"]["hits"] == 3


def test_off_by_environment_and_quiet_in_a_read_only_run(tmp_path, monkeypatch):
    import os

    run = make_run(tmp_path / "r", n_checkpoints=2)
    monkeypatch.setenv("ALIGNCTL_CACHE", "off")
    assert "cache" not in analyze(run) and not (run / ".alignctl-cache").exists()
    monkeypatch.delenv("ALIGNCTL_CACHE")
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    run.chmod(0o555)
    try:
        r = runner.invoke(app, ["analyze", str(run), "--json", "-"])
    finally:
        run.chmod(0o755)
    assert r.exit_code == 0 and "cache" not in r.stderr, r.stderr
    assert json.loads(r.stdout)["cache"]["hits"] == 0


def test_a_cached_run_repeats_the_checkpoints_notes_in_order(tmp_path):
    """Loading and measurement notes (keys ignored here) come back from the cache: a cached
    re-run prints what the first run printed."""
    from safetensors.torch import load_file, save_file

    run = make_run(tmp_path / "r")
    for path in sorted((run / "checkpoints").glob("*.safetensors")):
        state = load_file(path)
        state["criterion.weight"] = torch.ones(3)  # a loss buffer saved with the weights
        save_file(state, path, metadata={"step": path.stem.split("_")[1].lstrip("0") or "0"})
    first = analyze(run)
    assert first["cache"]["misses"] == 3 and any("criterion.weight" in n for n in first["notes"])
    again = analyze(run)
    assert again["cache"]["hits"] == 3 and again["notes"] == first["notes"]
    assert again["notes"] == analyze(run, "--no-cache")["notes"]
    assert all("_notes" not in c for c in again["checkpoints"] + first["checkpoints"])


def test_a_factory_helper_is_part_of_the_key(tmp_path):
    """qa4: only the factory file's bytes were keyed, so a change to a module it imports from
    beside it (`from helpers import x`, which factories support) reused the old numbers."""
    import types

    from alignctl.report.cache_keys import model_material

    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "qa4_helpers.py").write_text("WIDTH = 12\n")
    (lib / "nets.py").write_text(
        "import torch\nfrom qa4_helpers import WIDTH\n\n\ndef make():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(5, WIDTH), torch.nn.Linear(WIDTH, 3))\n"
    )
    spec = {"factory": f"{lib / 'nets.py'}:make"}
    config = types.SimpleNamespace(model=spec, base_dir=tmp_path)
    run = types.SimpleNamespace(config=config)
    try:
        first = model_material(run)
        assert first["factory_sha256"] == model_material(run)["factory_sha256"]
        (lib / "qa4_helpers.py").write_text("WIDTH = 12  # the same width, other code\n")
        assert model_material(run)["factory_sha256"] != first["factory_sha256"]
        # and the installed libraries its code uses: their upgrade changes the model too
        assert first["factory_libraries"] == [f"torch=={torch.__version__}"]
        # an installed package is keyed by its version, not by reading its files
        installed = model_material(types.SimpleNamespace(config=types.SimpleNamespace(
            model={"factory": "numpy:zeros"}, base_dir=tmp_path)))  # fmt: skip
        assert installed["factory_sha256"] == f"numpy=={np.__version__}"
        assert installed["factory_libraries"] == []
    finally:
        import sys

        sys.modules.pop("qa4_helpers", None)
