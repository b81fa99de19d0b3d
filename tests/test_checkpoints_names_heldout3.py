"""Checkpoint names as people write them: a metric in the name (a loss, an accuracy, a
learning rate) is not the step, and a name whose numbers contradict the stored epochs is not
the training order (found by a new user's plain PyTorch loop: `ckpt_e{e}_loss{loss:.4f}.pt`
was ordered by the loss's digits and the run's verdict came from its first checkpoint)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

# the model and helpers of the folder tests: the same small MLP and discovery
from test_checkpoints_folders import _found, _state

from alignctl.runs.checkpoints.peek import number_in_name


@pytest.mark.parametrize(
    "name, step",
    [
        ("ckpt_e12_loss0.0016", 12),  # a decimal is a metric, not a step
        ("weights.06-0.37", 6),  # Keras' weights.{epoch:02d}-{val_loss:.2f}
        ("epoch=3-val_loss=0.25", 3),  # Lightning's filename template with a metric
        ("run_lr1e-3_epoch_7", 7),  # an exponent is not a number of the name
        ("model_lr3E+04_9", 9),
        ("step_100_epoch_3", 100),  # the number the name calls the step wins
        ("epoch=3-step=100", 100),
        ("ckpt-iter500-acc97", 500),
        ("global_step120_val0.9", 120),
        ("split5_model_7", 7),  # "it" inside a word is not the label
        ("checkpoint-2000", 2000),  # the plain forms are unchanged
        ("step_00000010", 10),
        ("best_loss0.37", None),  # only a metric: an alias
        ("best", None),
    ],
)
def test_the_step_a_name_spells(name, step):
    assert number_in_name(name) == step


def test_metric_in_the_name_does_not_order_the_run(tmp_path):
    """The user's loop: the stored epoch plus the loss in the name."""
    losses = {0: 1.3863, 3: 0.0118, 6: 0.0016, 9: 0.0015, 12: 0.0016}
    for e, loss in losses.items():
        torch.save({"epoch": e, "model_state_dict": _state(e), "loss": loss},
                   tmp_path / f"ckpt_e{e}_loss{loss:.4f}.pt")  # fmt: skip
    found, notes = _found(tmp_path)
    assert [s for _, s in found] == [0, 3, 6, 9, 12]
    assert found[-1][0] == "ckpt_e12_loss0.0016.pt" and not notes


def test_keras_style_names_with_a_state_dict_only(tmp_path):
    files = {0: "weights.00-9.99", 3: "weights.03-0.01", 6: "weights.06-0.00",
             9: "weights.09-0.00", 12: "weights.12-0.00"}  # fmt: skip
    for e, stem in files.items():
        save_file(_state(e), str(tmp_path / f"{stem}.safetensors"))
    found, _ = _found(tmp_path)
    assert found == [(f"{stem}.safetensors", e) for e, stem in files.items()]


@pytest.mark.parametrize("pattern", ["model_acc{m}.pt", "ckpt_{e}_valacc{m}.pt"])
def test_whole_number_metric_contradicting_stored_epochs_is_noted_and_overruled(tmp_path, pattern):
    """An integer metric (accuracy in percent) cannot be told from a step by its spelling;
    the epochs the checkpoints store show the names are not the training order."""
    accs = {1: 62, 2: 90, 3: 88, 4: 97}  # not monotone: 3 would sort before 2
    for e, m in accs.items():
        torch.save({"model": _state(e), "epoch": e}, tmp_path / pattern.format(e=e, m=m))
    found, notes = _found(tmp_path)
    assert [s for _, s in found] == [1, 2, 3, 4]
    assert found[-1][0] == pattern.format(e=4, m=97)
    assert any("not the training order" in n and "stored epochs" in n for n in notes)


def test_steps_in_names_within_one_epoch_are_kept(tmp_path):
    """Several checkpoints per epoch: equal epochs never contradict the names' steps."""
    for step, e in [(100, 0), (200, 0), (300, 1), (400, 1)]:
        torch.save({"model": _state(step), "epoch": e}, tmp_path / f"step_{step}.pt")
    found, notes = _found(tmp_path)
    assert found == [(f"step_{s}.pt", s) for s in (100, 200, 300, 400)] and not notes
