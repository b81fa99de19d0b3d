"""``alignctl train`` under torchrun: DistributedDataParallel over 2 real gloo processes on CPU
(started as torchrun starts them, :func:`test_distributed.alignctl`). The 2-rank run trains
the weights one process trains, writes the run folder one process writes, resumes (with 2
ranks, or with the other process count) and fails with one line and exit 2 on every rank.
The runs carry GrokAlign (exact projections: no random draws), Grokfast and ⊥Grad: had the
gradient filters seen each rank's own gradient rather than the average, or the penalty been
summed rather than averaged over the ranks, the weights would differ by far more than rounding.

Tolerance: a 2-rank step sums each rank's part of the batch, then the two parts (and divides
by 2), one process sums the batch at once; the float32 gradients differ in their last bits
(relative ~1e-7), and AdamW (lr 1e-3, normalised steps) carries the difference on. After 36
steps the weights (of size ~1) differ by 2.4e-7 (3.5e-6 without the regularisers); the tests
allow 1e-4, far below what a wrong gradient gives (a share dropped, or counted twice, moves a
weight by up to lr = 1e-3 in one step; one epoch moves them by ~1e-2, checked).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_distributed import alignctl, silent
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.train.divergence import divergence_key, divergence_of

dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="no torch.distributed")

ATOL = 1e-4
# digits: 1437 samples in batches of 128, the last of 29: shares of 14 and 15 (weights 28/29
# and 30/29) besides the equal ones
DIGITS = ["--task", "digits", "--epochs", "3", "--threads", "1", "--save-every", "1", "--reg",
          "grokalign:n_proj=exact", "--reg", "grokfast", "--reg", "orthograd"]  # fmt: skip
VOLATILE = ("train_seconds", "processes")


def run_alignctl(args, nproc: int, cwd: Path):
    """One process in this one (no start-up to pay), or ``nproc`` gloo ranks."""
    if nproc > 1:
        return alignctl(args, nproc, cwd)
    r = CliRunner().invoke(app, [str(a) for a in args])
    r.returncode = r.exit_code
    return r


def train(tmp: Path, name: str, nproc: int, args=DIGITS):
    r = run_alignctl(["train", *args, "--out", tmp / name, "-q"], nproc, tmp)
    assert r.returncode == 0, r.stderr
    assert nproc == 1 or silent(r), [o.stderr for o in r.others]
    return tmp / name


def weights(run: Path, step: int | None = None) -> dict:
    files = sorted((run / "checkpoints").glob("step_*.safetensors"))
    path = files[-1] if step is None else run / "checkpoints" / f"step_{step:08d}.safetensors"
    return load_file(str(path))


def close(a: dict, b: dict, atol=ATOL) -> float:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= atol, worst
    return worst


def summary(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def steps(run: Path) -> list[int]:
    return sorted(
        int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("step_*.safetensors")
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    return tmp, train(tmp, "one", 1), train(tmp, "two", 2)


def test_two_ranks_train_the_weights_of_one_process(runs):
    _, one, two = runs
    assert steps(one) == steps(two) == [0, 12, 24, 36]
    for step in steps(one):
        close(weights(one, step), weights(two, step))
    with pytest.raises(AssertionError):  # the tolerance tells one epoch apart
        close(weights(one, 24), weights(two, 36), atol=100 * ATOL)
    a, b = summary(one), summary(two)
    assert a.keys() == b.keys() and (a["processes"], b["processes"]) == (1, 2)
    assert {k: v for k, v in a.items() if k not in VOLATILE and "accuracy" not in k} == {
        k: v for k, v in b.items() if k not in VOLATILE and "accuracy" not in k
    }
    assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 2 / 360  # a sample on the boundary
    logs = [[json.loads(ln) for ln in (r / "train_log.jsonl").read_text().splitlines()]
            for r in (one, two)]  # fmt: skip
    assert [e["step"] for e in logs[0]] == [e["step"] for e in logs[1]] == [0, 12, 24, 36]
    assert [sorted(e) for e in logs[0]] == [sorted(e) for e in logs[1]]
    assert (one / "alignctl.yaml").read_text() == (two / "alignctl.yaml").read_text()


def cut(run: Path, to: Path, keep: int) -> Path:
    """A copy of ``run`` as a kill right after the checkpoint of step ``keep`` leaves it."""
    shutil.copytree(run, to)
    for p in (to / "checkpoints").rglob("step_*"):
        if int(p.stem.split("_")[1]) > keep:
            p.unlink()
    return to


def resume(run: Path, nproc: int):
    r = run_alignctl(["train", "--resume", run, "--epochs", "3", "--threads", "1", "-q"], nproc,
                     run.parent)  # fmt: skip
    assert r.returncode == 0 and (nproc == 1 or silent(r)), r.stderr
    return r


def test_a_resumed_distributed_run_is_the_uninterrupted_one(runs):
    tmp, _, two = runs
    again = cut(two, tmp / "two-cut", keep=12)
    resume(again, 2)
    assert steps(again) == steps(two)
    for step in (24, 36):  # bit for bit: the same ranks, shares, state and seeds
        a, b = weights(again, step), weights(two, step)
        assert all(torch.equal(a[k], b[k]) for k in a)
    a, b = summary(again), summary(two)
    assert {k: v for k, v in a.items() if k != "train_seconds"} == {
        k: v for k, v in b.items() if k != "train_seconds"
    }


def test_a_run_resumes_with_the_other_process_count(runs):
    """1 -> 2 and 2 -> 1: the saved state (optimiser, data order, position) is the same for any
    number of processes; the weights equal one process's within the tolerance."""
    tmp, one, two = runs
    up = cut(one, tmp / "one-to-two", keep=12)
    resume(up, 2)
    down = cut(two, tmp / "two-to-one", keep=24)
    resume(down, 1)
    for run in (up, down):
        assert steps(run) == steps(one) and summary(run)["steps"] == 36
        close(weights(run), weights(one))
    assert (summary(up)["processes"], summary(down)["processes"]) == (2, 1)


def test_analyze_reads_the_distributed_run(runs):
    tmp, _, two = runs
    r = run_alignctl(["analyze", two, "--json", "-", "--threads", "1", "--metrics", "fast"], 1,
                     tmp)  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert [c["step"] for c in report["checkpoints"]] == [0, 12, 24, 36]
    assert report["checkpoints"][-1]["test_accuracy"] == summary(two)["test_accuracy"]


FACTORY = """
import os

import torch


def make():
    if os.environ.get("RANK") == "1":
        raise ValueError("no model on rank 1")
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
"""


def test_an_error_on_any_rank_is_one_line_and_exit_2_everywhere(tmp_path):
    """Rank 0 checks the options and the run as one process does; a failure only rank 1 meets
    (its model) reaches rank 0 before training: one line, exit 2 on every rank, no hang."""
    (tmp_path / "net.py").write_text(FACTORY)
    cfg = {"model": {"factory": "net.py:make"},
           "data": {"task": "sparse-parity", "n": 64, "n_bits": 8, "k": 2, "seed": 0},
           "train": {"epochs": 2, "loss": "cross_entropy",
                     "optimizer": {"name": "adamw", "lr": 0.01}}}  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    r = alignctl(["train", "--config", "cfg.yaml", "--out", "run", "--threads", "1"], 2, tmp_path)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and silent(r), (r.stderr, [o.stderr for o in r.others])
    assert len(errors) == 1 and "rank 1" in errors[0], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_a_divergence_stops_every_rank_at_the_step_one_process_stops(tmp_path):
    """SGD with lr 1e30: the loss overflows within a few steps; the ranks agree on the first
    bad step (one all-reduce) and stop together: exit 3 on both, run.json as one process's."""
    cfg = {"model": {"arch": "mlp", "in_features": 8, "hidden": [16], "out_features": 2},
           "data": {"task": "sparse-parity", "n": 64, "n_bits": 8, "k": 2, "seed": 0},
           "train": {"epochs": 4, "loss": "mse", "batch_size": 10,
                     "optimizer": {"name": "sgd", "lr": 1e30}}}  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    got = []
    for nproc in (1, 2):
        out = tmp_path / f"run{nproc}"
        r = run_alignctl(["train", "--config", tmp_path / "cfg.yaml", "--out", out, "-q",
                          "--threads", "1"], nproc, tmp_path)  # fmt: skip
        assert r.returncode == 3 and (nproc == 1 or silent(r)), r.stderr
        got.append({k: v for k, v in summary(out).items() if k not in VOLATILE})
        assert got[-1]["status"] == "diverged" and steps(out) == [0]
    assert got[0] == got[1]


@pytest.mark.parametrize(
    "found",
    [None, {"step": 3, "reason": "the training loss of step 3 is nan"},
     {"step": 3, "reason": "the training loss of step 3 is inf"},
     {"step": 7, "reason": "the training loss of step 7 is -inf"},
     {"step": 7, "reason": "the weight 0.weight holds NaN or inf at step 7"}],
)  # fmt: skip
def test_a_divergence_travels_as_one_number(found):
    back = divergence_of(divergence_key(found))
    if found is None or "loss" in found["reason"]:
        assert back == found
    else:
        assert back["step"] == found["step"] and "NaN or inf" in back["reason"]


def test_the_earliest_divergence_sorts_first_as_one_process_decides():
    loss = {"step": 5, "reason": "the training loss of step 5 is inf"}
    nan = {"step": 5, "reason": "the training loss of step 5 is nan"}
    weight = {"step": 5, "reason": "the weight w holds NaN or inf at step 5"}
    earlier = {"step": 4, "reason": "the weight w holds NaN or inf at step 4"}
    keys = [divergence_key(d) for d in (earlier, nan, loss, weight, None)]
    assert keys == sorted(keys) and len(set(keys)) == 5


def test_a_subsampled_penalty_trains_under_ddp(tmp_path):
    """grokalign:subsample forwards its rows a second time, outside the DDP wrapper: the
    gradient hooks on the parameters still carry that pass, and the run trains."""
    args = ["--task", "digits", "--epochs", "1", "--threads", "1", "--save-every", "1",
            "--reg", "grokalign:subsample=0.25"]  # fmt: skip
    run = train(tmp_path, "sub", 2, args)
    assert steps(run) and summary(run)["processes"] == 2
    w = weights(run)
    assert all(bool(torch.isfinite(v).all()) for v in w.values())
