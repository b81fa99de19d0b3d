"""An input error that only rank 1 meets, under the real torchrun (2 gloo processes): rank 0
prints the one ``error:`` line, every rank exits 2 (not -15: torchrun's SIGTERM to the ranks
still leaving no longer changes the agreed code), no traceback of alignctl's, and ``train``
writes nothing. torchrun itself exits 1 whenever a rank exits non-zero, with its own
ChildFailedError summary: that is torchrun's rule, not alignctl's."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from test_distributed import TIMEOUT, _env, alignctl, make_run, silent

dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="no torch.distributed")

RANK1_FAILS = """
import os

import torch


def make():
    if os.environ.get("RANK") == "1":
        raise ValueError("no model on rank 1")
    return torch.nn.Sequential(torch.nn.Linear(5, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))
"""


def torchrun(args, cwd, env=None):
    """``torchrun --standalone --nproc-per-node=2 -m alignctl ARGS``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "alignctl", *map(str, args)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=_env(env),
                          timeout=TIMEOUT)  # fmt: skip


def one_error_exit_2_everywhere(r, fragment: str) -> None:
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], r.stderr
    codes = [int(c) for c in re.findall(r"^ +exitcode +: (-?\d+)", r.stderr, re.MULTILINE)]
    assert codes == [2, 2], r.stderr  # torchrun's summary: each rank's own exit code
    frames = [ln for ln in r.stderr.splitlines() if ln.strip().startswith("File ")]
    assert not any("alignctl" in f for f in frames), r.stderr  # torchrun's traceback only
    assert r.returncode == 1 and r.stdout == ""  # torchrun's: a rank exited non-zero


def test_analyze_a_corrupt_checkpoint_only_rank_1_reads(tmp_path):
    run = make_run(tmp_path / "run", n_checkpoints=4)  # rank 1's share: steps 1 and 3
    (run / "checkpoints" / "step_00000001.safetensors").write_bytes(b"\x00" * 64)
    r = torchrun(["analyze", run, "--json", "-", "--threads", "1", "--metrics", "fast"],
                 tmp_path)  # fmt: skip
    one_error_exit_2_everywhere(r, "step_00000001")


def test_train_and_race_with_a_model_only_rank_1_cannot_build(tmp_path):
    (tmp_path / "net.py").write_text(RANK1_FAILS)
    cfg = {"model": {"factory": "net.py:make"}, "data": {"path": "data.npz"},
           "train": {"epochs": 2}, "grokked": {"train_acc": 0.9}}  # fmt: skip
    make_run(tmp_path / "run", n_checkpoints=0)
    (tmp_path / "data.npz").write_bytes((tmp_path / "run" / "data.npz").read_bytes())
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    r = torchrun(["train", "--config", "cfg.yaml", "--out", "out", "--threads", "1"], tmp_path)
    one_error_exit_2_everywhere(r, "no model on rank 1")
    assert not (tmp_path / "out").exists()  # every rank built its trainer before any write
    r = torchrun(["race", "--config", "cfg.yaml", "--regs", "none,grokalign", "--seeds", "1",
                  "--out", "race", "--threads", "1", "--max-epochs", "2"], tmp_path)  # fmt: skip
    one_error_exit_2_everywhere(r, "no model on rank 1")


def test_a_bad_torchrun_setting_is_said_once(tmp_path):
    """A setting every rank reads the same (ALIGNCTL_DIST_TIMEOUT): one line, from rank 0."""
    r = alignctl(["metrics"], 2, tmp_path, env={"ALIGNCTL_DIST_TIMEOUT": "soon"})
    assert r.returncode == 2 and silent(r), [r.stderr] + [o.stderr for o in r.others]
    assert r.stderr.strip().splitlines() == [
        "error: ALIGNCTL_DIST_TIMEOUT='soon' is not a number of seconds"
    ]  # fmt: skip
