"""Folders as training code leaves them: steps read where loops store them, files that are not
model weights skipped by content, aliases (best/last/final) never silently last (issue 11)."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.runs.checkpoints import discover_checkpoints

MODEL = {"arch": "mlp", "in_features": 4, "hidden": [8], "out_features": 3}


def _state(seed: int) -> dict[str, torch.Tensor]:
    from alignctl.runs.models import build_model

    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in build_model(MODEL, Path(".")).state_dict().items()}


def _found(folder: Path) -> tuple[list[tuple[str, int | None]], list[str]]:
    notes: list[str] = []
    refs = discover_checkpoints(folder, notes)
    return [(r.path.name, r.step) for r in refs], notes


# ------------------------------------------------------------------ steps


@pytest.mark.parametrize(
    "obj, step, source",
    [
        ({"model": "SD", "iter_num": 2000, "best_val_loss": torch.tensor(2.5),
          "model_args": {"n_layer": 1}, "config": {"lr": 1e-3}}, 2000, "iter_num"),  # nanoGPT
        ({"state_dict": "SD", "global_step": 250, "epoch": 2}, 250, "global_step"),  # Lightning
        ({"model_state_dict": "SD", "step": torch.tensor(40)}, 40, "step"),  # a 0-d tensor
        ({"model": "SD", "iteration": 12, "epoch": 1}, 12, "iteration"),
        ({"state_dict": "SD", "epoch": 3}, 3, "epoch"),  # timm: only an epoch, labelled
    ],
)  # fmt: skip
def test_step_read_where_loops_store_it(tmp_path, obj, step, source):
    key = next(k for k, v in obj.items() if v == "SD")
    torch.save({**obj, key: _state(1)}, tmp_path / "ckpt.pt")  # no number in the name
    (ref,) = discover_checkpoints(tmp_path / "ckpt.pt")
    assert (ref.step, ref.step_from) == (step, source)


def test_a_state_dict_buffer_named_step_is_not_a_step(tmp_path):
    torch.save({**_state(1), "step": torch.tensor(99)}, tmp_path / "w_5.pt")
    (ref,) = discover_checkpoints(tmp_path / "w_5.pt")
    assert (ref.step, ref.step_from) == (5, "name")


def test_epochs_are_steps_only_when_nothing_else_is_stored(tmp_path):
    for e in (3, 1, 2):
        torch.save({"state_dict": _state(e), "epoch": e}, tmp_path / f"model_e_{chr(96 + e)}.pt")
    names, notes = _found(tmp_path)
    assert names == [("model_e_a.pt", 1), ("model_e_b.pt", 2), ("model_e_c.pt", 3)]
    assert any("stored epochs" in n for n in notes)
    # Beside real steps, an epoch-only checkpoint cannot be placed: left out, with the reason.
    torch.save({"state_dict": _state(9), "global_step": 500}, tmp_path / "last.ckpt")
    names, notes = _found(tmp_path)
    assert names == [("last.ckpt", 500)]
    assert sum("records only an epoch, not a step" in n for n in notes) == 3


def test_hugging_face_trainer_state(tmp_path):
    for name, gs in (("checkpoint-a", 40), ("checkpoint-b", 20)):
        folder = tmp_path / name
        folder.mkdir()
        save_file(_state(gs), str(folder / "model.safetensors"))
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": gs, "epoch": 1.0}))
    names, _ = _found(tmp_path)
    assert names == [("checkpoint-b", 20), ("checkpoint-a", 40)]
    (ref,) = discover_checkpoints(tmp_path / "checkpoint-a" / "model.safetensors")
    assert (ref.step, ref.step_from) == (40, "trainer_state.json")


# ------------------------------------------------------------------ files that are not weights


def _strays(folder: Path) -> list[str]:
    """What a Hugging Face / Lightning / plain loop leaves beside the weights."""
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(net.parameters())
    net(torch.ones(2, 4)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 3)
    torch.save(opt.state_dict(), folder / "optimizer.pt")
    torch.save(sched.state_dict(), folder / "scheduler.pt")
    torch.save({"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                "growth_interval": 2000, "_growth_tracker": 0}, folder / "scaler.pt")  # fmt: skip
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(),
                "cpu": torch.random.get_rng_state()}, folder / "rng_state.pth")  # fmt: skip
    torch.save(TrainingArguments(), folder / "training_args.bin")
    torch.save({"optimizer": opt.state_dict(), "epoch": 4}, folder / "opt_state_40.pt")
    return ["optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth", "training_args.bin",
            "opt_state_40.pt"]  # fmt: skip


class TrainingArguments:  # stands for transformers' pickled dataclass
    def __init__(self) -> None:
        self.output_dir, self.learning_rate = "out", 5e-5


def test_files_that_are_not_weights_are_skipped_with_a_note(tmp_path):
    strays = _strays(tmp_path)
    for step in (10, 20):
        torch.save({"model": _state(step), "step": step}, tmp_path / f"ckpt_{step}.pt")
    names, notes = _found(tmp_path)
    assert names == [("ckpt_10.pt", 10), ("ckpt_20.pt", 20)]
    (note,) = [n for n in notes if n.startswith("skipped")]
    assert "optimizer.pt (an optimizer state)" in note
    assert "scheduler.pt (a learning-rate scheduler state)" in note
    for name in strays:
        assert name in note
    assert "training_args.bin (a pickled test_checkpoints_folders.TrainingArguments" in note


def test_folder_of_only_strays_is_one_clear_error(tmp_path):
    _strays(tmp_path)
    with pytest.raises(InputError, match=r"no model checkpoints in .*: skipped .*optimizer"):
        discover_checkpoints(tmp_path)
    with pytest.raises(InputError, match=r"optimizer.pt is not a model checkpoint: it holds an"):
        discover_checkpoints(tmp_path / "optimizer.pt")


# ------------------------------------------------------------------ aliases


def test_aliases_use_their_stored_step_or_leave_the_trajectory(tmp_path):
    for step in (100, 200, 300):
        torch.save({"model": _state(step), "step": step}, tmp_path / f"step_{step}.pt")
    torch.save({"model": _state(200), "step": 200}, tmp_path / "best.pt")  # a copy: dropped
    torch.save({"model": _state(350), "step": 350}, tmp_path / "last.pt")  # newer: the last
    torch.save({"model": _state(300)}, tmp_path / "final.pt")  # no step, same as step_300
    torch.save({"model": _state(7)}, tmp_path / "latest.pt")  # no step, unknown weights
    save_file(_state(250), str(tmp_path / "weights.safetensors"))  # no step at all
    names, notes = _found(tmp_path)
    assert names == [("step_100.pt", 100), ("step_200.pt", 200), ("step_300.pt", 300),
                     ("last.pt", 350)]  # fmt: skip
    text = " | ".join(notes)
    assert "left out best.pt: a copy of step_200.pt" in text
    assert "left out final.pt: the same weights as step_300.pt" in text
    assert "left out latest.pt: it records no step" in text
    assert "left out weights.safetensors: it records no step" in text


def test_same_step_different_weights_alias_is_never_last(tmp_path):
    for step in (1, 2):
        torch.save({"model": _state(step), "global_step": step}, tmp_path / f"s_{step}.ckpt")
    torch.save({"model": _state(99), "global_step": 2}, tmp_path / "last.ckpt")
    names, notes = _found(tmp_path)
    assert names == [("s_1.ckpt", 1), ("last.ckpt", 2), ("s_2.ckpt", 2)]
    assert any("both record step 2 but hold different weights" in n for n in notes)


def test_only_unnumbered_checkpoints_are_ordered_by_name_with_a_note(tmp_path):
    torch.save(_state(1), tmp_path / "best.pt")
    torch.save(_state(2), tmp_path / "last.pt")
    torch.save(_state(2), tmp_path / "latest.pt")
    names, notes = _found(tmp_path)
    assert names == [("best.pt", None), ("last.pt", None)]
    assert any("latest.pt: a copy of last.pt" in n for n in notes)
    assert any("no checkpoint records a step" in n and "last.pt is the last" in n for n in notes)


def test_analyze_judges_the_last_numbered_checkpoint_and_prints_notes(tmp_path):
    run = tmp_path / "run"
    ck = run / "checkpoints"
    ck.mkdir(parents=True)
    g = np.random.default_rng(0)
    np.savez(run / "data.npz", x_train=g.normal(size=(12, 4)).astype(np.float32),
             y_train=np.arange(12) % 3)  # fmt: skip
    cfg = {"model": MODEL, "data": {"path": "data.npz"}}
    (run / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    for step in (10, 20):
        lit = {f"model.{k}": v for k, v in _state(step).items()}
        lit["criterion.weight"] = torch.ones(3)
        torch.save({"state_dict": lit, "global_step": step, "hyper_parameters": {"lr": 0.1}},
                   ck / f"epoch=0-step={step}.ckpt")  # fmt: skip
    torch.save({"state_dict": {f"model.{k}": v for k, v in _state(5).items()}}, ck / "best.ckpt")
    torch.save(torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), 0.1).state_dict(),
               ck / "optimizer.pt")  # fmt: skip
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    r = CliRunner().invoke(app, ["analyze", str(run), "--json", "-", "--metrics", "fast"])
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert [c["step"] for c in report["checkpoints"]] == [10, 20]
    assert report["checkpoints"][-1]["name"] == "epoch=0-step=20"
    notes = report["notes"]
    assert any("optimizer.pt (an optimizer state)" in n for n in notes)
    assert any("left out best.ckpt" in n for n in notes)
    assert sum("criterion.weight" in n for n in notes) == 1  # once, not once per checkpoint
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    r = CliRunner().invoke(app, ["analyze", str(run), "--metrics", "fast"])
    assert "note: left out best.ckpt" in r.stderr


def test_pickled_payload_among_strays_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "training_args.bin").write_bytes(pickle.dumps(Evil()))
    torch.save({"args": Evil()}, tmp_path / "trainer.bin")
    torch.save(_state(1), tmp_path / "step_1.pt")
    names, notes = _found(tmp_path)
    assert names == [("step_1.pt", 1)] and not marker.exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_deepspeed_layout_and_torchscript(tmp_path):
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), 0.1).state_dict()
    torch.save({"module": _state(1), "global_steps": 30, "ds_version": "0.14"},
               tmp_path / "mp_rank_00_model_states.pt")  # fmt: skip
    torch.save({"optimizer_state_dict": opt, "ds_version": "0.14"},
               tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt")  # fmt: skip
    # A DeepSpeed tag folder is one checkpoint (heldout4: its optim_states files are its parts)
    names, notes = _found(tmp_path)
    assert names == [(tmp_path.name, 30)]
    (tmp_path / "mp_rank_00_model_states.pt").rename(tmp_path / "model_states.pt")
    names, notes = _found(tmp_path)
    assert names == [("model_states.pt", 30)]
    assert any("optim_states.pt (an optimizer state)" in n for n in notes)
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "scripted.pt")
    with pytest.raises(InputError, match=r"scripted.pt is a TorchScript archive.*state_dict"):
        discover_checkpoints(tmp_path)


@pytest.mark.parametrize("name", ["step_5.safetensors", "epoch=0-step=10.ckpt", "model.pt"])
def test_a_folder_named_like_a_checkpoint_file_is_named_in_a_note(tmp_path, name):
    """qa8: a folder named like a checkpoint file (a sharded DeepSpeed save is an
    ``epoch=0-step=10.ckpt/`` folder) was skipped without a word; the others are analysed,
    and a folder of nothing else is one error naming it."""
    (tmp_path / name).mkdir()
    (tmp_path / name / "shard_0.bin").write_bytes(b"\0" * 8)
    torch.save({"model": _state(1), "step": 20}, tmp_path / "ckpt_20.pt")
    names, notes = _found(tmp_path)
    assert names == [("ckpt_20.pt", 20)]
    assert any(f"{name}/ (a folder, not a checkpoint file)" in n for n in notes), notes
    (tmp_path / "ckpt_20.pt").unlink()
    with pytest.raises(InputError, match="a folder, not a checkpoint file"):
        discover_checkpoints(tmp_path)
