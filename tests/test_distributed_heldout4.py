"""``torchrun -m alignctl analyze`` (real gloo ranks) on run kinds the 2-rank path had not been
compared on: checkpoints that record no step (numbered by their place in the run), engine
folders, an error on rank 1's share. The report must be the one a single process writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from test_distributed import MODEL, alignctl, silent, without_timing

dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="no torch.distributed")


def _run(root: Path, names: list[str]) -> Path:
    """Safetensors checkpoints without metadata under ``names``; inputs offset by +5."""
    from alignctl.runs.models import build_model

    (root / "checkpoints").mkdir(parents=True)
    g = np.random.default_rng(1)
    x = (g.normal(size=(40, 5)) + 5).astype(np.float32)
    y = (x[:, 0] > 5).astype(np.int64) + (x[:, 1] > 5)
    np.savez(root / "data.npz", x_train=x, y_train=y)
    (root / "alignctl.yaml").write_text(
        yaml.safe_dump({"model": MODEL, "data": {"path": "data.npz"}})
    )
    for seed, name in enumerate(names):
        torch.manual_seed(seed)
        state = {k: v.clone() for k, v in build_model(MODEL, root).state_dict().items()}
        save_file(state, str(root / "checkpoints" / f"{name}.safetensors"))
    return root


@pytest.mark.parametrize(
    ("names", "nproc"),
    [(["ckpt_20261130_2359", "ckpt_20261201_0015", "ckpt_20261201_0130"], 2),
     (["run-1764547200", "run-1764550800"], 3),  # Unix times; more ranks than checkpoints
     (["warmup", "middle", "late", "last", "final"], 2)],  # names only: ordered by name
)  # fmt: skip
def test_stepless_checkpoints_keep_their_place_in_the_run(tmp_path, names, nproc):
    """Before: a checkpoint without a recorded step was numbered by its place in its rank's
    share, not in the run (3 timestamped checkpoints over 2 ranks: steps [0, 0, 1], and the
    recommendation said "to step 1"); after: the single process's steps and report."""
    run = _run(tmp_path / "run", names)
    args = ["analyze", run, "--json", "-", "--threads", "1", "--no-cache"]
    one, many = alignctl(args, 1, tmp_path), alignctl(args, nproc, tmp_path)
    assert one.returncode == many.returncode == 0 and silent(many), (one.stderr, many.stderr)
    a, b = json.loads(one.stdout), json.loads(many.stdout)
    assert [c["step"] for c in b["checkpoints"]] == [c["step"] for c in a["checkpoints"]]
    assert without_timing(b) == without_timing(a)
    assert many.stderr == one.stderr  # the notes, in the same order
