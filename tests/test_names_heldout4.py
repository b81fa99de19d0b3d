"""Checkpoint names of real training code that carry numbers which are not steps: dates and
times (``run_20241130_143055``: the time of day ordered a run across midnight, silently),
version tags inside a name (``model_100_v2``), seeds and ranks (``epoch_10_seed42``) and model
sizes after a labelled epoch (``e10_resnet50``): those numbers were every checkpoint's step."""

from __future__ import annotations

import pytest
import torch

# the model and helpers of the folder tests: the same small MLP and discovery
from test_checkpoints_folders import _found, _state

from alignctl.runs.checkpoints.peek import number_in_name


@pytest.mark.parametrize(
    "name, step",
    [
        # dates and times are not steps (were 143055, 30)
        ("run_20241130_143055", None),
        ("ckpt_2024-11-30", None),
        ("ckpt_2024-11-30_14-30-55", None),
        ("model_2024.11.30T14:30:55", None),
        ("run_20241130_step_100", 100),
        ("run_20241130_1500", None),  # 15:00 (a step when the folder says so: timestamps_heldout4)
        ("checkpoint_2024_1500", 1500),  # no month 15: not a date
        # version tags, seeds and ranks (were 2, 42, 42)
        ("model_100_v2", 100),
        ("model_v2_100", 100),
        ("model_v1", None),
        ("exp3_epoch_10_seed42", 10),
        ("model_seed1_7", 7),
        ("exp3_seed42_epoch_10", 10),
        # an epoch the name labels wins over an unlabelled number (was 50)
        ("e10_resnet50", 10),
        ("resnet50_e10", 10),
        ("epoch_1_batch_500", 1),  # the batch index restarts each epoch
        ("run_e5f2_100", 100),  # e5 inside a run id is no label
        # the forms of training code, unchanged
        ("checkpoint_3_1500", 1500),  # fairseq: epoch 3, update 1500
        ("checkpoint_best", None),
        ("checkpoint_last", None),
        ("ckpt", None),  # nanoGPT (stores iter_num)
        ("iter_0001500", 1500),  # Megatron
        ("global_step1500", 1500),  # DeepSpeed
        ("epoch_0", 0),  # torchtune
        ("checkpoint-12", 12),  # timm, .pth.tar
        ("model_best", None),
        ("model.02-0.95", 2),  # Keras' model.{epoch:02d}-{val_accuracy:.2f}
        ("epoch=2-step=300", 300),
        ("epoch=2-step=300-v1", 300),
        ("2-0.35", 2),  # Lightning's {epoch}-{val_loss:.2f}
        ("last-v1", None),
        ("checkpoint-500", 500),
        ("STEP_100", 100),
        ("Step-100", 100),
        ("step_0000100", 100),
    ],
)
def test_numbers_that_are_not_steps(name, step):
    assert number_in_name(name) == step


def test_timestamped_names_across_midnight_keep_the_training_order(tmp_path):
    """The last checkpoint was the one saved at 23:59 on the first day; now the names are
    timestamps, not steps: their times order them, with a note saying which is last."""
    stamps = ["20241130_235900", "20241201_001500", "20241201_013000"]
    for i, t in enumerate(stamps):
        torch.save({"model": _state(i)}, tmp_path / f"run_{t}.pt")
    found, notes = _found(tmp_path)
    assert [n for n, _ in found] == [f"run_{t}.pt" for t in stamps]
    assert any(
        "ordered by the dates and times" in n and "run_20241201_013000.pt" in n for n in notes
    ), notes


def test_timestamped_names_use_the_stored_step(tmp_path):
    for i, (t, step) in enumerate([("20241130_235900", 900), ("20241201_001500", 1000)]):
        torch.save({"model": _state(i), "step": step}, tmp_path / f"run_{t}.pt")
    found, notes = _found(tmp_path)
    assert found == [("run_20241130_235900.pt", 900), ("run_20241201_001500.pt", 1000)]
    assert not notes


@pytest.mark.parametrize("pattern", ["exp3_epoch_{e}_seed42.pt", "e{e}_resnet50.pt",
                                     "model_{e}_v2.pt"])  # fmt: skip
def test_a_constant_number_in_every_name_is_not_the_step(tmp_path, pattern):
    for e in (1, 2, 10):
        torch.save({"model": _state(e)}, tmp_path / pattern.format(e=e))
    found, notes = _found(tmp_path)
    assert found == [(pattern.format(e=e), e) for e in (1, 2, 10)] and not notes


def test_fairseq_epoch_and_update_checkpoints_by_their_stored_updates(tmp_path):
    """fairseq saves ``checkpoint{epoch}.pt`` at each epoch's end and
    ``checkpoint_{epoch}_{updates}.pt`` between: by the names' numbers checkpoint2.pt (update
    2000, the last) sorted first and checkpoint_2_1500.pt was judged as the last, silently."""

    def save(name, epoch, updates):
        obj = {"model": _state(updates), "extra_state": {"epoch": epoch},
               "optimizer_history": [{"criterion_name": "ce", "num_updates": updates}]}  # fmt: skip
        torch.save(obj, tmp_path / name)

    for name, e, u in [("checkpoint_1_500.pt", 1, 500), ("checkpoint1.pt", 1, 1000),
                       ("checkpoint_2_1500.pt", 2, 1500), ("checkpoint2.pt", 2, 2000)]:  # fmt: skip
        save(name, e, u)
    save("checkpoint_last.pt", 2, 2000)
    found, notes = _found(tmp_path)
    assert found == [("checkpoint_1_500.pt", 500), ("checkpoint1.pt", 1000),
                     ("checkpoint_2_1500.pt", 1500), ("checkpoint2.pt", 2000)]  # fmt: skip
    assert notes == ["left out checkpoint_last.pt: a copy of checkpoint2.pt (same weights)"]
