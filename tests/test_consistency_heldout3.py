"""One run, every path to its report: ``--no-cache``, a cache cold, warm (all hits) and after one
new checkpoint (one miss), the Python API, and ``torchrun`` over 2 gloo ranks (checkpoints
dealt; one checkpoint: its samples dealt). The run combines what the merged verdict fixes read:
imbalanced classes with a test split (chance is the class prior), a recorded squared-error loss
(judged with it) and no step-0 checkpoint (a fresh initialisation stands in).
Everything but ``seconds`` and the ``cache`` counts agrees exactly (dealt samples: 1e-6)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from test_distributed import alignctl as launch
from test_distributed import torchrun, without_timing
from test_verdict_heldout3 import _fit_and_save

ARGS = ["--json", "-", "--samples", "48", "--threads", "1", "--device", "cpu", "-q"]


def _mse_imbalanced_run(root):
    rng = np.random.default_rng(4)
    y = (rng.random(300) < 0.15).astype("int64")
    x = (rng.normal(size=(300, 8)) + 1.5 * y[:, None]).astype("float32")
    np.savez(root / "data.npz", x_train=x[:150], y_train=y[:150], x_test=x[150:], y_test=y[150:])
    cfg = {"model": {"factory": "models.py:make_net"}, "data": {"path": "data.npz"},
           "train": {"loss": "mse"}}  # fmt: skip
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    xt = torch.as_tensor(x[:150])
    target = torch.nn.functional.one_hot(torch.as_tensor(y[:150]), 2).float()
    _fit_and_save(root, lambda net: (net(xt) - target).pow(2).sum(1).mean(), (30, 120, 300))
    (root / "later").mkdir()
    shutil.move(root / "checkpoints" / "ckpt-300.pt", root / "later" / "ckpt-300.pt")


def _close(a, b, rel):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k], rel)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _close(x, y, rel)
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=rel)
    else:
        assert a == b


def test_every_path_gives_one_report(tmp_path):
    from alignctl import analyze, open_run

    _mse_imbalanced_run(tmp_path)

    def cli(*extra):
        r = launch(["analyze", str(tmp_path), *ARGS, *extra], 1, tmp_path)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def reports(cache, expect):
        want = without_timing(cli("--no-cache"))
        last = want["checkpoints"][-1]
        assert want["reference"] is not None  # no step 0: the stand-in
        assert next(e for e in last["evidence"] if e["signal"] == "chance")["value"] > 0.5
        got = cli("--cache", str(cache))
        assert got["cache"]["hits"] == expect[0] and got["cache"]["misses"] == expect[1]
        assert without_timing(got) == want
        api = analyze(open_run(str(tmp_path)), samples=48, device="cpu", threads=1)
        assert without_timing(json.loads(json.dumps(api))) == want
        two = torchrun(["analyze", str(tmp_path), *ARGS, "--no-cache"], 2, tmp_path)
        assert two.returncode == 0, two.stderr
        _close(without_timing(json.loads(two.stdout)), want, 1e-6)
        return want

    cache = tmp_path / "cache"
    reports(cache, (0, 2))
    reports(cache, (2, 0))  # warm: all hits, judged again
    shutil.move(tmp_path / "later" / "ckpt-300.pt", tmp_path / "checkpoints" / "ckpt-300.pt")
    reports(cache, (2, 1))  # one new checkpoint: one miss
    for ck in ("ckpt-30.pt", "ckpt-120.pt"):  # one checkpoint: torchrun deals its samples
        (tmp_path / "checkpoints" / ck).unlink()
    reports(cache, (1, 0))
