"""``torchrun -m alignctl analyze|race`` over 2 real gloo processes on CPU: the report and the
race table are the ones a single process writes; an error on any rank is one line from rank
0 and exit 2 on every rank; nothing hangs."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_race import TINY as RACE_TINY

from alignctl.report.distributed import requested, round_robin

dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="no torch.distributed")

SRC = Path(__file__).resolve().parents[1] / "src"
MODEL = {"arch": "mlp", "in_features": 5, "hidden": [12], "out_features": 3}
TIMEOUT = 120  # a hang fails the test instead of the suite


def make_run(root: Path, n_checkpoints=6) -> Path:
    from alignctl.runs.checkpoints import write_checkpoint
    from alignctl.runs.models import build_model

    root.mkdir(parents=True)
    g = np.random.default_rng(1)
    x = g.normal(size=(60, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    np.savez(root / "data.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    (root / "alignctl.yaml").write_text(
        yaml.safe_dump({"model": MODEL, "data": {"path": "data.npz"}})
    )
    for step in range(n_checkpoints):
        torch.manual_seed(step)
        state = build_model(MODEL, root).state_dict()
        meta = {"step": step * 100, "alignctl_version": "test"}
        write_checkpoint(root / "checkpoints" / f"step_{step:08d}.safetensors", state, meta)
    return root


def _env(extra: dict | None) -> dict:
    environ = {**os.environ, "PYTHONPATH": str(SRC), "NO_COLOR": "1", "ALIGNCTL_CACHE": "off",
               "OMP_NUM_THREADS": "1", "ALIGNCTL_DIST_TIMEOUT": "60", **(extra or {})}  # fmt: skip
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        environ.pop(k, None)
    return environ


def alignctl(args, nproc: int, cwd: Path, env: dict | None = None):
    """``python -m alignctl ARGS``: one process, or ``nproc`` gloo ranks started as torchrun
    starts them (its environment variables), so that each rank's exit code and output can be
    read (torchrun itself exits 1 when a rank exits non-zero). Rank 0's result, with
    ``others``: the other ranks' results."""
    cmd = [sys.executable, "-m", "alignctl", *map(str, args)]
    if nproc == 1:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=_env(env),
                              timeout=TIMEOUT)  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(nproc):
        ranked = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
                  "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1",
                  "MASTER_PORT": str(port)}  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, cwd=cwd, env={**_env(env), **ranked}))  # fmt: skip
    done = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT)
            done.append(subprocess.CompletedProcess(cmd, p.returncode, out, err))
    finally:
        for p in procs:
            p.kill()
    done[0].others = done[1:]
    return done[0]


def torchrun(args, nproc: int, cwd: Path):
    """The real launcher: ``python -m torch.distributed.run --standalone``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "alignctl", *map(str, args)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=_env(None),
                          timeout=TIMEOUT)  # fmt: skip


def silent(result) -> bool:
    """The ranks other than 0 printed nothing and exited with rank 0's code."""
    return all(o.stdout == o.stderr == "" and o.returncode == result.returncode
               for o in result.others)  # fmt: skip


def without_timing(report: dict) -> dict:
    report = {k: v for k, v in report.items() if k != "cache"}
    report["checkpoints"] = [{k: v for k, v in c.items() if k != "seconds"}
                             for c in report["checkpoints"]]  # fmt: skip
    return report


def test_round_robin_deals_every_item_once():
    for n in range(0, 9):
        for size in range(1, 5):
            deal = round_robin(n, size)
            assert sorted(i for share in deal for i in share) == list(range(n))
            assert max(map(len, deal)) - min(map(len, deal)) <= 1


@pytest.mark.parametrize(
    ("gpus", "local", "nccl", "want"),
    [(0, 2, True, "gloo"), (1, 2, True, "gloo"), (2, 2, True, "nccl"), (8, 2, True, "nccl"),
     (8, 8, True, "nccl"), (4, 8, True, "gloo"), (2, 2, False, "gloo"), (1, 1, True, "nccl"),
     (1, 0, True, "nccl")],
)  # fmt: skip
def test_nccl_only_when_every_local_rank_has_its_own_gpu(gpus, local, nccl, want):
    """Two ranks on one GPU under NCCL: the second fails and the first waits out the start
    timeout (seen on a 1-GPU machine); gloo lets them share the device."""
    from alignctl.report.distributed import choose_backend

    assert choose_backend(gpus, local, nccl) == want


def test_single_process_unless_torchrun_says_otherwise():
    torchrun = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    assert requested(torchrun)
    assert not requested({})
    assert not requested({**torchrun, "WORLD_SIZE": "1"})
    assert not requested({**torchrun, "ALIGNCTL_DISTRIBUTED": "off"})
    assert not requested({k: v for k, v in torchrun.items() if k != "MASTER_ADDR"})


def test_two_ranks_write_the_report_one_process_writes(tmp_path):
    run = make_run(tmp_path / "run")
    from alignctl.runs.checkpoints import write_checkpoint
    from alignctl.runs.models import build_model

    state = build_model(MODEL, run).state_dict()  # rank 1's: diverged, with a note
    state["1.weight"] = torch.full_like(state["1.weight"], float("nan"))
    write_checkpoint(run / "checkpoints" / "step_00000003.safetensors", state, {"step": 300})
    args = ["analyze", run, "--json", "-", "--threads", "1", "--keep-samples"]
    one = alignctl(args, 1, tmp_path)
    two = torchrun(args, 2, tmp_path)
    assert one.returncode == two.returncode == 0, (one.stderr, two.stderr)
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    assert [c["step"] for c in b["checkpoints"]] == list(range(0, 600, 100))
    assert [c["diverged"] for c in b["checkpoints"]] == [False] * 3 + [True] + [False] * 2
    assert without_timing(a) == without_timing(b)  # every number, verdict and note
    assert two.stderr.count("note:") == one.stderr.count("note:")
    three = alignctl(args, 3, tmp_path)  # 6 checkpoints over 3 ranks; each rank's own output
    assert three.returncode == 0 and silent(three), three.stderr
    assert without_timing(json.loads(three.stdout)) == without_timing(a)


def test_the_cache_is_read_and_written_by_rank_zero(tmp_path):
    """Rank 0 keys every checkpoint and deals only the misses; its entries serve 1 process."""
    run = make_run(tmp_path / "run")
    args = ["analyze", run, "--json", "-", "--threads", "1"]
    on = {"ALIGNCTL_CACHE": "on"}
    two = alignctl(args, 2, tmp_path, on)
    again = alignctl(args, 1, tmp_path, on)
    assert two.returncode == again.returncode == 0, two.stderr
    b, c = json.loads(two.stdout), json.loads(again.stdout)
    assert b["cache"]["misses"] == 6 and c["cache"]["hits"] == 6 and silent(two)
    assert without_timing(b) == without_timing(c)


def test_the_earliest_error_is_one_line_and_exit_2_everywhere(tmp_path):
    """A corrupt checkpoint on rank 1's share and one that does not fit the model on rank
    0's: rank 0 says once what one process says, the first one's error (rank 1's), not its own;
    every rank exits 2, the others silently."""
    run = make_run(tmp_path / "run")
    from alignctl.runs.checkpoints import write_checkpoint

    (run / "checkpoints" / "step_00000001.safetensors").write_bytes(b"\x00" * 64)
    misfit = {"second.weight": torch.zeros(7, 7)}
    write_checkpoint(run / "checkpoints" / "step_00000002.safetensors", misfit, {"step": 200})
    args = ["analyze", run, "--json", "-", "--threads", "1"]
    one, two = alignctl(args, 1, tmp_path), alignctl(args, 2, tmp_path)
    assert one.returncode == two.returncode == 2 and silent(two), (one.stderr, two.stderr)
    errors = [line for line in two.stderr.splitlines() if line.startswith("error:")]
    assert errors == [line for line in one.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "step_00000001" in errors[0]
    assert two.stdout == "" and "Traceback" not in two.stderr


TINY = {**RACE_TINY, "train": {**RACE_TINY["train"], "epochs": 8}}  # seconds, not grokking
TIMED = ("mean_seconds", "wall_speedup")


def test_a_race_over_two_ranks_is_the_race_of_one_process(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    tables = []
    for nproc in (1, 2):
        out = tmp_path / f"race{nproc}"
        args = ["race", "--config", cfg, "--regs", "none,grokalign:lambda=0.1", "--seeds", "1",
                "--out", out, "--json", "-", "--threads", "1"]  # fmt: skip
        r = alignctl(args, nproc, tmp_path)
        assert r.returncode == 0 and (nproc == 1 or silent(r)), r.stderr
        res = json.loads(r.stdout)
        assert len(list(out.rglob("run.json"))) == 2  # one pair per rank
        tables.append([{k: v for k, v in row.items() if k not in TIMED} for row in res["rows"]])
    assert tables[0] == tables[1]


FACTORY = """
import os
from pathlib import Path

import torch


def make():
    with open(Path(__file__).with_name("built.txt"), "a") as f:  # which ranks built a model
        f.write(os.environ.get("RANK", "-") + "\\n")
    return torch.nn.Sequential(torch.nn.Linear(5, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))
"""


def test_one_checkpoint_deals_its_samples(tmp_path):
    """A run with one checkpoint: rank 1 measures the second half of the samples; the
    per-sample values, means and stds are those of one process."""
    import importlib.util

    from alignctl.runs.checkpoints import write_checkpoint

    run = make_run(tmp_path / "run", n_checkpoints=0)
    (run / "net.py").write_text(FACTORY)
    cfg = yaml.safe_load((run / "alignctl.yaml").read_text())
    (run / "alignctl.yaml").write_text(yaml.safe_dump({**cfg, "model": {"factory": "net.py:make"}}))
    spec = importlib.util.spec_from_file_location("net", run / "net.py")
    net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(net)
    torch.manual_seed(0)
    write_checkpoint(run / "checkpoints" / "step_00000100.safetensors", net.make().state_dict(),
                     {"step": 100})  # fmt: skip
    (run / "built.txt").unlink()
    args = ["analyze", run, "--json", "-", "--threads", "1", "--keep-samples"]
    one, two = alignctl(args, 1, tmp_path), alignctl(args, 2, tmp_path)
    assert one.returncode == two.returncode == 0 and silent(two), two.stderr
    assert "1" in (run / "built.txt").read_text().split()  # rank 1 built the model: it measured
    a, b = without_timing(json.loads(one.stdout)), without_timing(json.loads(two.stdout))
    assert len(b["samples"]["metrics"][0]["jacobian_norm"]) == 40
    assert_close(a, b)  # each value from a smaller batch: kernels may round apart


def assert_close(a, b, rel: float = 1e-6, path: str = "") -> None:
    """``a == b`` with every float within ``rel`` (relative; 1e-9 absolute near 0), recursively.
    Dealt samples are measured in smaller batches: float32 kernels chosen by batch size round
    apart by a few ulps (1.4e-8 relative seen on an AVX-512 CPU, where 9 significant digits
    differed); equal structure, keys, strings and integers are required as they are."""
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=rel, abs_tol=1e-9), (path, a, b)
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), (path, sorted(a), sorted(b))
        for k in a:
            assert_close(a[k], b[k], rel, f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), (path, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, rel, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)
