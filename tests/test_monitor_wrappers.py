"""``alignctl.measure`` and ``alignctl.Monitor`` on wrapped models: torch.compile,
nn.DataParallel, DistributedDataParallel (2 real gloo processes) and nestings of them. The
measurement runs the wrapped module (geometry/wrappers.py): DDP's forward broadcasts its
buffers, so a Monitor made on rank 0 alone (the natural place for it) hung the job on any
model with batch norm. The monitor's checkpoints of a wrapped model carry the wrappers'
``module.`` / ``_orig_mod.`` prefixes and ``alignctl analyze`` reads them back."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import alignctl
from alignctl.geometry.wrappers import unwrap

SRC = str(Path(__file__).resolve().parents[1] / "src")


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


WRAPS = {
    "compile": lambda m: torch.compile(m, backend="eager"),
    "DataParallel": nn.DataParallel,
    "DataParallel(compile)": lambda m: nn.DataParallel(torch.compile(m, backend="eager")),
    "compile(DataParallel)": lambda m: torch.compile(nn.DataParallel(m), backend="eager"),
}


@pytest.mark.parametrize("kind", list(WRAPS))
def test_wrapped_models_are_measured_as_the_module_inside(kind):
    inner = net()
    wrapped = WRAPS[kind](inner)
    assert unwrap(wrapped) is inner
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    ref = alignctl.measure(inner, x, y)
    got = alignctl.measure(wrapped, x, y)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    f64 = alignctl.measure(wrapped, x, y, dtype=torch.float64)  # a copy of the module inside
    assert all(torch.allclose(f64[k].float(), ref[k], atol=1e-4) for k in ref)


@pytest.mark.parametrize("kind", ["compile", "DataParallel(compile)"])
def test_monitor_checkpoints_of_a_wrapped_model_are_analysed(tmp_path, kind):
    from typer.testing import CliRunner

    from alignctl.cli.assemble import app

    model = WRAPS[kind](net())
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    y = (x[:, 0] > 0).long()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = {"factory": f"{tmp_path / 'nets.py'}:make"}
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Linear(6, 16), "
        "nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))\n"
    )
    with alignctl.Monitor(model, x, y, every=5, out=tmp_path / "out", save_checkpoints=True,
                          model_config=cfg, overwrite=True) as mon:  # fmt: skip
        for step in range(11):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(step)
    logged = [json.loads(line) for line in (tmp_path / "out/alignment.jsonl").open()]
    r = CliRunner().invoke(app, ["analyze", str(tmp_path / "out"), "--metrics", "fast",
                                 "--samples", "64", "--no-cache", "--json", "-"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert [c["step"] for c in report["checkpoints"]] == [0, 5, 10]
    for entry, ck in zip(logged, report["checkpoints"], strict=True):
        for k, v in entry["metrics"].items():
            assert ck["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), (k, entry["step"])


RANK_SCRIPT = """
import datetime, json, os, sys
import torch, torch.distributed as dist
from torch import nn
import alignctl

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
rank = dist.get_rank()
x = torch.randn(128, 6, generator=torch.Generator().manual_seed(0))
y = (x[:, 0] > 0).long()


def train(monitor):
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    model = nn.parallel.DistributedDataParallel(inner)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = None
    if monitor and rank == 0:  # the monitor on rank 0 alone
        mon = alignctl.Monitor(model, x[:32], y[:32], every=3, out=sys.argv[1], overwrite=True,
                               test=(x[32:64], y[32:64]))
    for step in range(10):
        idx = torch.arange(16) + 16 * rank + 8 * step
        loss = nn.functional.cross_entropy(model(x[idx % 128]), y[idx % 128])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if mon is not None:
            mon.step(step)
    if mon is not None:
        mon.close()
    params = torch.cat([p.detach().flatten() for p in inner.parameters()])
    both = [torch.zeros_like(params) for _ in range(2)]
    dist.all_gather(both, params)  # the weights agree; batch-norm statistics are per rank
    state = torch.cat([v.flatten().double() for v in inner.state_dict().values()])
    return torch.equal(*both), state


(agree, monitored), (_, plain) = train(True), train(False)
if rank == 0:
    with open(sys.argv[2], "w") as f:
        json.dump({"ranks_agree": agree, "unchanged": torch.equal(monitored, plain)}, f)
dist.destroy_process_group()
# torch's, not alignctl's: a DDP reducer still holding the gloo group when the interpreter
# finalises can abort the process ("terminate called without an active exception", seen in
# CI on rank 1, which has no monitor); the work is done and written, so leave at once
sys.stdout.flush()
os._exit(0)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_monitor_on_rank_0_of_a_ddp_model_with_batch_norm(tmp_path):
    """Two real gloo ranks; before the fix rank 0's measurement waited in DDP's buffer
    broadcast, which rank 1 never joined (a hang until the group's timeout)."""
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "mon"), str(tmp_path / "result.json")],
            env={**env, "RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for r in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result == {"ranks_agree": True, "unchanged": True}
    lines = (tmp_path / "mon" / "alignment.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 3, 6, 9]
