"""A plain loop that saves ``epoch_0.pt`` after its first epoch has a "step 0" that already fits
the data: it is not the start, so the fresh-initialisation stand-in must be measured. Before,
the stand-in was skipped whenever any checkpoint was step 0, and such runs (the usual
``for e in range(E): ...; torch.save(..., f"epoch_{e}.pt")``) read nothing without a test split:
every fitted checkpoint abstained with "not measured or no initialisation to compare with"."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from test_distributed import alignctl, without_timing

from alignctl import analyze, open_run

MODEL = {"arch": "mlp", "in_features": 8, "hidden": [32], "out_features": 3}


def _loop(root, epochs=6, save_init=False, stored_step=False):
    """Mini-batch epochs that fit easy data within the first; ``epoch_{e}.pt`` after each."""
    from alignctl.runs.models import build_model

    rng = np.random.default_rng(0)
    means = rng.normal(size=(3, 8)) * 3
    y = rng.integers(0, 3, 96)
    x = (means[y] + rng.normal(size=(96, 8))).astype("float32")
    root.mkdir()
    np.savez(root / "data.npz", x_train=x, y_train=y)
    (root / "alignctl.yaml").write_text(yaml.safe_dump({"model": MODEL, "data": {
        "path": "data.npz", "num_classes": 3}}))  # fmt: skip
    torch.manual_seed(1)
    net = build_model(MODEL, root)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    ck = root / "ckpt"
    ck.mkdir()
    if save_init:  # the true start, saved before training
        torch.save(net.state_dict(), ck / "init_0.pt")
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for e in range(epochs):
        for i in range(0, 96, 8):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[i : i + 8]), yt[i : i + 8]).backward()
            opt.step()
        obj = {"model": net.state_dict(), **({"step": e} if stored_step else {"epoch": e})}
        torch.save(obj, ck / f"epoch_{e + 1 if save_init else e}.pt")
    return ck


def _fresh_read(report) -> None:
    last = report["checkpoints"][-1]
    assert report["checkpoints"][0]["step"] == 0
    assert report["checkpoints"][0]["train_accuracy"] >= 0.98  # step 0 fits: not the start
    assert report["reference"] and report["reference"]["source"] == "fresh initialisation"
    ev = {e["signal"]: e for e in last["evidence"]}
    assert ev["norm_growth"]["value"] is not None, last["evidence"]
    assert "reference" in ev


@pytest.mark.parametrize("stored_step", [False, True])
def test_a_fitted_step_zero_gets_the_stand_in(tmp_path, stored_step):
    ck = _loop(tmp_path / "run", stored_step=stored_step)
    _fresh_read(analyze(open_run(ck), device="cpu", threads=1))


def test_a_real_start_at_step_zero_is_used_and_no_stand_in_measured(tmp_path):
    ck = _loop(tmp_path / "run", save_init=True)
    report = analyze(open_run(ck), device="cpu", threads=1)
    assert report["checkpoints"][0]["train_accuracy"] < 0.98
    assert report["reference"] is None
    ev = {e["signal"]: e for e in report["checkpoints"][-1]["evidence"]}
    assert ev["norm_growth"]["value"] is not None and "reference" not in ev


def test_the_cache_decides_from_a_cached_step_zero(tmp_path):
    """Cold, warm, and warm with one new checkpoint (step 0 a hit, the new one a miss)."""
    ck = _loop(tmp_path / "run", epochs=5)
    plain = analyze(open_run(ck), device="cpu", threads=1)
    cold = analyze(open_run(ck), device="cpu", threads=1, cache=tmp_path / "c")
    warm = analyze(open_run(ck), device="cpu", threads=1, cache=tmp_path / "c")
    assert warm["cache"]["misses"] == 0
    for rep in (cold, warm):
        assert rep["reference"] == plain["reference"]
        assert [c["evidence"] for c in rep["checkpoints"]] == [
            c["evidence"] for c in plain["checkpoints"]
        ]
    grown = _loop(tmp_path / "grown", epochs=6)  # the same seeded loop, one epoch longer
    cache = tmp_path / "c2"
    analyze(open_run(ck), device="cpu", threads=1, cache=cache)
    (ck / "epoch_5.pt").write_bytes((grown / "epoch_5.pt").read_bytes())
    more = analyze(open_run(ck), device="cpu", threads=1, cache=cache)
    assert more["cache"]["misses"] == 1
    _fresh_read(more)


def test_two_ranks_measure_the_stand_in_as_one_process(tmp_path):
    ck = _loop(tmp_path / "run", epochs=4)
    args = ["analyze", ck, "--json", "-", "--threads", "1"]
    one, two = alignctl(args, 1, tmp_path), alignctl(args, 2, tmp_path)
    assert one.returncode == two.returncode == 0, (one.stderr, two.stderr)
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    _fresh_read(a)
    assert without_timing(a) == without_timing(b)
