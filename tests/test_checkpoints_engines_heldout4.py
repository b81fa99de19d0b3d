"""Checkpoint folders written by distributed-training engines: torch.distributed.checkpoint
(DCP; written by the real ``dcp.save``, in one process and by 2 real gloo ranks under FSDP2),
DeepSpeed ZeRO 0-2 tag folders (built with torch.save in DeepSpeed's documented layout:
deepspeed is not installed here), the Hugging Face FSDP ``pytorch_model_fsdp_0/`` layout and
accelerate's real ``save_state``. Each run's metrics must equal, exactly, those of the same
weights saved as plain safetensors; bad folders are one ``error:`` line and exit 2."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.runs.checkpoints import write_checkpoint

dcp = pytest.importorskip("torch.distributed.checkpoint")
SRC = str(Path(__file__).resolve().parents[1] / "src")
MODEL = {"arch": "mlp", "in_features": 4, "hidden": [8], "out_features": 3}


def _state(seed: int) -> dict[str, torch.Tensor]:
    from alignctl.runs.models import build_model

    torch.manual_seed(seed)
    return {k: v.clone() for k, v in build_model(MODEL, Path(".")).state_dict().items()}


def _run(root: Path) -> Path:
    (root / "checkpoints").mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 4, generator=g), torch.arange(24) % 3
    np.savez(root / "data.npz", x_train=x.numpy(), y_train=y.numpy())
    (root / "alignctl.yaml").write_text(
        yaml.safe_dump({"model": MODEL, "data": {"path": "data.npz"}})
    )
    return root


def _cli(path: Path, *extra: str):
    return CliRunner().invoke(
        app, ["analyze", str(path), "--json", "-", "--metrics", "standard", "--no-cache", *extra]
    )


def _analyze(path: Path, *extra: str) -> dict:
    r = _cli(path, *extra)
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def _refused(path: Path, match: str, *extra: str) -> str:
    r = _cli(path, *extra)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert match in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    return lines[0]


def _trajectory(report: dict) -> list:
    return [(c["step"], c["metrics"]) for c in report["checkpoints"]]


def _reference(tmp_path: Path, states: dict[int, dict]) -> list:
    """The metrics of the same weights saved as plain safetensors checkpoints."""
    ref = _run(tmp_path / "plain")
    for step, sd in states.items():
        write_checkpoint(ref / "checkpoints" / f"step_{step}.safetensors", sd, {"step": step})
    return _trajectory(_analyze(ref))


def _save(state: dict, folder: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save(state, checkpoint_id=str(folder), no_dist=True)


def _adam(sd: dict) -> dict:
    net = torch.nn.Linear(4, 8)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(2, 4)).sum().backward()
    opt.step()
    return opt.state_dict()


# ------------------------------------------------------------------------- DCP, one process


@pytest.mark.filterwarnings("ignore")
def test_dcp_nested_state_steps_from_train_state_not_names(tmp_path):
    """{"model", "optimizer", "train_state": {"step"}} (torchtitan / FSDP2 style); folder names
    in the opposite order to the stored steps: the stored steps win."""
    run = _run(tmp_path / "run")
    states = {100: _state(1), 200: _state(2), 300: _state(3)}
    for name, step in (("ckpt-c", 100), ("ckpt-b", 200), ("ckpt-a", 300)):
        _save({"model": states[step], "optimizer": _adam(states[step]),
               "train_state": {"step": torch.tensor(step), "tokens": 5}, "lr": 0.1},
              run / "checkpoints" / name)  # fmt: skip
    report = _analyze(run)
    assert [c["name"] for c in report["checkpoints"]] == ["ckpt-c", "ckpt-b", "ckpt-a"]
    assert _trajectory(report) == _reference(tmp_path, states)


@pytest.mark.filterwarnings("ignore")
def test_dcp_top_level_model_and_int_step(tmp_path):
    """The model's state dict at the top level (torchtitan's model-only last save) with a
    plain int ``step`` item (a bytes item, read with weights-only rules), and one folder passed
    alone (its config two levels up)."""
    run = _run(tmp_path / "run")
    states = {5: _state(4), 40: _state(5)}
    for step, sd in states.items():
        _save({**sd, "step": step}, run / "checkpoints" / f"weights_{step:03d}x")
    assert _trajectory(_analyze(run)) == _reference(tmp_path, states)
    one = _analyze(run / "checkpoints" / "weights_040x")
    assert [c["step"] for c in one["checkpoints"]] == [40]


@pytest.mark.filterwarnings("ignore")
def test_dcp_non_tensor_item_is_never_unpickled(tmp_path):
    """DCP itself would torch.load a non-tensor item with weights_only=False: alignctl never
    requests one, so a payload saved beside the model runs nothing."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    run = _run(tmp_path / "run")
    _save({"model": _state(1), "extra": Payload(), "step": 3}, run / "checkpoints" / "s")
    assert [c["step"] for c in _analyze(run)["checkpoints"]] == [3]
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore")
def test_hugging_face_fsdp_sharded_layout(tmp_path):
    """checkpoint-N/pytorch_model_fsdp_0/ (DCP of {"model": sd}) beside optimizer_0/ (DCP of the
    optimizer), rng and scheduler files and trainer_state.json (the step)."""
    run = _run(tmp_path / "run")
    states = {10: _state(6), 20: _state(7)}
    for n, (step, sd) in enumerate(states.items()):
        ck = run / "checkpoints" / f"checkpoint-{n}"
        _save({"model": sd}, ck / "pytorch_model_fsdp_0")
        _save({"optimizer": _adam(sd)}, ck / "optimizer_0")
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        torch.save({"last_epoch": 1, "base_lrs": [0.1]}, ck / "scheduler.pt")
    assert _trajectory(_analyze(run)) == _reference(tmp_path, states)
    one = _analyze(run / "checkpoints" / "checkpoint-1")
    assert [c["step"] for c in one["checkpoints"]] == [20]


# ------------------------------------------------------------------- DCP, two gloo ranks

RANK_SCRIPT = """
import datetime, sys, warnings
warnings.filterwarnings("ignore")
import torch, torch.distributed as dist, torch.distributed.checkpoint as dcp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from alignctl.runs.models import build_model

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
mesh = init_device_mesh("cpu", (2,))
for step in (50, 150):
    torch.manual_seed(step)
    model = build_model({"arch": "mlp", "in_features": 4, "hidden": [8], "out_features": 3}, ".")
    if dist.get_rank() == 0:
        torch.save(model.state_dict(), f"{sys.argv[1]}/full_{step}.pt")
    fully_shard(model, mesh=mesh)  # FSDP2: every parameter a DTensor sharded over both ranks
    dcp.save({"model": model.state_dict(), "train_state": {"step": step}},
             checkpoint_id=f"{sys.argv[1]}/checkpoints/step-{step}")
dist.destroy_process_group()
# leave without running C++ static destructors: at interpreter exit they raced gloo's threads
# now and then ("terminate called without an active exception", SIGABRT) after all was saved
sys.stdout.flush()
import os
os._exit(0)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dcp_saved_by_two_gloo_ranks_under_fsdp2(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("no torch.distributed")
    run = _run(tmp_path / "run")
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "PYTHONPATH": SRC, "MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": "2",
           "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}  # fmt: skip
    procs = [
        subprocess.Popen([sys.executable, str(script), str(run)], env={**env, "RANK": str(r)},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    shards = sorted(p.name for p in (run / "checkpoints" / "step-50").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    states = {s: torch.load(run / f"full_{s}.pt", weights_only=True) for s in (50, 150)}
    for s in states:
        (run / f"full_{s}.pt").unlink()
    assert _trajectory(_analyze(run)) == _reference(tmp_path, states)


# ----------------------------------------------------------------------------- DeepSpeed


def _deepspeed(folder: Path, sd: dict, step: int, **client) -> None:
    """DeepSpeed's ZeRO-1/2 tag folder (engine.save_checkpoint): module weights + engine state
    in mp_rank_00_model_states.pt, fp32 partitions in one optim_states file per rank."""
    folder.mkdir(parents=True)
    torch.save({"module": {f"module.{k}": v for k, v in sd.items()}, "buffer_names": [],
                "optimizer": None, "param_shapes": [{k: v.shape for k, v in sd.items()}],
                "lr_scheduler": None, "global_steps": step, "global_samples": step * 8,
                "skipped_steps": 0, "dp_world_size": 2, "mp_world_size": 1,
                "ds_config": {"zero_optimization": {"stage": 2}}, "ds_version": "0.14.4",
                **client}, folder / "mp_rank_00_model_states.pt")  # fmt: skip
    for rank in range(2):
        torch.save({"optimizer_state_dict": {"zero_stage": 2, "loss_scaler": None},
                    "ds_version": "0.14.4"},
                   folder / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")  # fmt: skip


@pytest.mark.filterwarnings("ignore")
def test_deepspeed_tag_folders_with_latest(tmp_path):
    run = _run(tmp_path / "run")
    states = {100: _state(1), 200: _state(2), 300: _state(3)}
    for step, sd in states.items():
        _deepspeed(run / "checkpoints" / f"global_step{step}", sd, step)
    (run / "checkpoints" / "latest").write_text("global_step300")
    (run / "checkpoints" / "zero_to_fp32.py").write_text("# DeepSpeed's script\n")
    assert _trajectory(_analyze(run)) == _reference(tmp_path, states)
    one = _analyze(run / "checkpoints" / "global_step200")
    assert [c["step"] for c in one["checkpoints"]] == [200]


@pytest.mark.filterwarnings("ignore")
def test_lightning_deepspeed_ckpt_folders(tmp_path):
    """Lightning's DeepSpeed strategy: epoch=E-step=S.ckpt/ holding latest + checkpoint/; the
    trainer's global_step rides in the model-states file (client state)."""
    run = _run(tmp_path / "run")
    states = {4: _state(1), 8: _state(2)}
    for e, (step, sd) in enumerate(states.items()):
        outer = run / "checkpoints" / f"epoch={e}-step={step}.ckpt"
        _deepspeed(outer / "checkpoint", sd, step, global_step=step, epoch=e)
        (outer / "latest").write_text("checkpoint")
    assert _trajectory(_analyze(run)) == _reference(tmp_path, states)


def test_deepspeed_zero3_is_refused_with_the_way_out(tmp_path):
    run = _run(tmp_path / "run")
    tag = run / "checkpoints" / "global_step10"
    tag.mkdir()
    for rank in range(2):
        torch.save({"module": {}, "global_steps": 10},
                   tag / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt")  # fmt: skip
    (run / "checkpoints" / "latest").write_text("global_step10")
    _refused(run, "zero_to_fp32.py")


# ----------------------------------------------------------------------------- accelerate


@pytest.mark.filterwarnings("ignore")
def test_accelerate_save_state_folders(tmp_path):
    accelerate = pytest.importorskip("accelerate")
    from accelerate.utils import ProjectConfiguration

    from alignctl.runs.models import build_model

    run = _run(tmp_path / "run")
    (run / "checkpoints").rmdir()  # accelerate writes project_dir/checkpoints/checkpoint_N
    acc = accelerate.Accelerator(cpu=True, project_config=ProjectConfiguration(
        project_dir=str(run), automatic_checkpoint_naming=True))  # fmt: skip
    torch.manual_seed(0)
    net = build_model(MODEL, Path("."))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net, opt = acc.prepare(net, opt)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 4, generator=g), torch.arange(24) % 3
    states = {}
    for n in range(3):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        acc.backward(loss)
        opt.step()
        opt.zero_grad()
        acc.save_state(safe_serialization=n != 1)  # checkpoint_1 holds pytorch_model.bin
        states[n] = {k: v.clone() for k, v in acc.unwrap_model(net).state_dict().items()}
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (run / "checkpoints" / "checkpoint_2" / "random_states_0.pkl").write_bytes(
        pickle.dumps(Payload())
    )
    assert _trajectory(_analyze(run)) == _reference(tmp_path, states)
    assert not marker.exists()


# ------------------------------------------------------------------------- bad DCP folders


def _bad_run(tmp_path: Path) -> tuple[Path, Path]:
    run = _run(tmp_path / "run")
    folder = run / "checkpoints" / "step-5"
    import torch.distributed as dist  # noqa: F401  (dcp needs it importable)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # tensors spread over two shard files, as two ranks write them
        dcp.save({"model": _state(1), "step": 5}, checkpoint_id=str(folder), no_dist=True)
    (folder / "__0_0.distcp").rename(folder / "__1_0.distcp")
    raw = (folder / ".metadata").read_bytes().replace(b"__0_0.distcp", b"__1_0.distcp")
    (folder / ".metadata").write_bytes(raw)
    return run, folder


def _snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.filterwarnings("ignore")
def test_dcp_missing_and_truncated_shards(tmp_path):
    run, folder = _bad_run(tmp_path)
    assert [c["step"] for c in _analyze(run)["checkpoints"]] == [5]
    data = (folder / "__1_0.distcp").read_bytes()
    (folder / "__1_0.distcp").write_bytes(data[: len(data) - 100])
    before = _snapshot(run)
    _refused(run, "shard __1_0.distcp is truncated")
    assert _snapshot(run) == before
    (folder / "__1_0.distcp").unlink()
    _refused(run, "shard __1_0.distcp named in .metadata is missing")


@pytest.mark.filterwarnings("ignore")
def test_dcp_keys_that_do_not_fit_and_two_copies(tmp_path):
    run = _run(tmp_path / "run")
    other = {"arch": "mlp", "in_features": 4, "hidden": [16], "out_features": 3}
    from alignctl.runs.models import build_model

    _save({"model": build_model(other, Path(".")).state_dict(), "step": 1},
          run / "checkpoints" / "a")  # fmt: skip
    _refused(run, "does not fit the model")
    _save({"model": _state(1), "teacher": _state(2), "step": 1}, run / "checkpoints" / "a")
    _refused(run, "--state-key")
    same = _analyze(run, "--state-key", "teacher")["checkpoints"][0]["metrics"]
    assert same == _reference(tmp_path, {1: _state(2)})[0][1]


class _Evil:
    def __init__(self, marker: Path, how: str):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "open":
            return (open, (str(self.marker), "w"))
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["open", "system"])
def test_dcp_metadata_pickle_that_runs_code_is_refused(tmp_path, how):
    run, folder = _bad_run(tmp_path)
    marker = tmp_path / "pwned"
    (folder / ".metadata").write_bytes(pickle.dumps(_Evil(marker, how), protocol=4))
    line = _refused(run, "which DCP metadata never holds: refused (nothing was executed)")
    assert ("open" if how == "open" else "system") in line
    assert not marker.exists()


def test_dcp_metadata_that_patches_an_allowed_class_is_refused(tmp_path):
    """Only allowed globals, but BUILD on a class (setting attributes of torch.Size itself)."""
    run, folder = _bad_run(tmp_path)
    # PROTO 2, GLOBAL torch.Size, (None, {"x": 1}), BUILD: setattr(torch.Size, "x", 1)
    payload = b"\x80\x02ctorch\nSize\nN}X\x01\x00\x00\x00xK\x01s\x86b."
    (folder / ".metadata").write_bytes(payload)
    _refused(run, "BUILD on type")
    assert not hasattr(torch.Size, "x")
