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
    (root / "checkpoints").mkdir(parents=True)
    g = np.random.default_rng(1)
    x = (g.normal(size=(40, 5)) + 5).astype(np.float32)
    y = (x[:, 0] > 5).astype(np.int64) + (x[:, 1] > 5)
    np.savez(root / "data.npz", x_train=x, y_train=y)
    (root / "alignctl.yaml").write_text(
        yaml.safe_dump({"model": MODEL, "data": {"path": "data.npz"}})
    )
    for seed, name in enumerate(names):
        save_file(_state(seed), str(root / "checkpoints" / f"{name}.safetensors"))
    return root


def _state(seed: int) -> dict[str, torch.Tensor]:
    from alignctl.runs.models import build_model

    torch.manual_seed(seed)
    return {k: v.clone() for k, v in build_model(MODEL, Path(".")).state_dict().items()}


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


@pytest.mark.filterwarnings("ignore")
def test_engine_folders_and_pickles_over_two_ranks_are_one_process_report(tmp_path):
    """5 checkpoints of 4 kinds (a DCP folder written by the real ``dcp.save``, a DeepSpeed
    tag folder, a legacy and a zip torch pickle holding a bytearray, safetensors) on offset
    inputs over 2 ranks: the single process's report (input_offset, measured_on, notes in
    order); the cache the ranks write serves one process the same report."""
    import torch.distributed.checkpoint as dcp

    from alignctl.runs.checkpoints import write_checkpoint

    run = _run(tmp_path / "run", [])
    states = [_state(seed) for seed in range(5)]
    cks = run / "checkpoints"
    dcp.save({"model": states[0], "train_state": {"step": torch.tensor(0)}},
             checkpoint_id=str(cks / "ckpt-0"), no_dist=True)  # fmt: skip
    (cks / "global_step100").mkdir()
    torch.save({"module": states[1], "global_steps": 100},
               cks / "global_step100" / "mp_rank_00_model_states.pt")  # fmt: skip
    for step, zipped in ((200, False), (300, True)):
        torch.save({"model_state_dict": states[step // 100], "step": step, "blob": bytearray(8)},
                   cks / f"ckpt-{step}.pt", _use_new_zipfile_serialization=zipped)  # fmt: skip
    write_checkpoint(cks / "step_400.safetensors", states[4], {"step": 400})
    args = ["analyze", run, "--json", "-", "--threads", "1"]
    one = alignctl([*args, "--no-cache"], 1, tmp_path)
    two = alignctl([*args, "--no-cache"], 2, tmp_path)
    assert one.returncode == two.returncode == 0 and silent(two), (one.stderr, two.stderr)
    a = json.loads(one.stdout)
    assert [c["step"] for c in a["checkpoints"]] == [0, 100, 200, 300, 400]
    assert a["checkpoints"][0]["input_offset"] < -1 and a["measured_on"]["data_sha256"]
    assert without_timing(json.loads(two.stdout)) == without_timing(a)
    assert two.stderr == one.stderr
    on, cache = {"ALIGNCTL_CACHE": "on"}, ["--cache", tmp_path / "cache"]
    written = alignctl([*args, *cache], 2, tmp_path, on)
    read = alignctl([*args, *cache], 1, tmp_path, on)
    assert written.returncode == read.returncode == 0, (written.stderr, read.stderr)
    assert json.loads(read.stdout)["cache"]["hits"] == 5
    assert without_timing(json.loads(read.stdout)) == without_timing(a)
