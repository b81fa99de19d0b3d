"""Safetensors checkpoints streamed tensor by tensor (issue 17 item 7): the streamed load gives
the model, the notes and the errors of the state-dict path on every layout, and steps aside
(None) where it cannot decide or load alone."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from alignctl.errors import InputError
from alignctl.runs.checkpoints import CheckpointRef, load_weights, read_weights
from alignctl.runs.checkpoints import stream as stream_mod
from alignctl.runs.checkpoints.stream import stream_checkpoint


def net():
    return nn.Sequential(nn.Linear(5, 70), nn.BatchNorm1d(70), nn.ReLU(), nn.Linear(70, 3))


def _sd(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in net().state_dict().items()}


LAYOUTS = {
    "plain": lambda: _sd(),
    "float64": lambda: _sd(dtype=torch.float64),
    "bfloat16": lambda: _sd(dtype=torch.bfloat16),
    "ddp": lambda: {f"module.{k}": v for k, v in _sd().items()},
    "lightning": lambda: {**{f"model.{k}": v for k, v in _sd().items()},
                          "criterion.weight": torch.ones(3)},
    "with_ema": lambda: {**_sd(), **{f"ema.{k}": v for k, v in _sd(1).items()}},
    "two_copies": lambda: {**{f"a.{k}": v for k, v in _sd().items()},
                           **{f"b.{k}": v for k, v in _sd(1).items()}},
    "missing": lambda: {k: v for k, v in _sd().items() if k != "3.bias"},
    "shape": lambda: {**_sd(), "3.weight": torch.zeros(4, 70)},
    "unexpected": lambda: {**_sd(), "4.weight": torch.zeros(2)},
}  # fmt: skip
OPTIONS = [{}, {"weights": "ema"}, {"state_key": "model"}, {"state_key": "a"}]


def _general(path, options):
    model = net()
    try:
        ck = read_weights(CheckpointRef(path, path.name, 0), **options)
        notes = ck.notes + load_weights(model, ck.state, path.name, aliases=ck.aliases,
                                        mode=ck.mode, prefix=ck.prefix)  # fmt: skip
    except InputError as e:
        return None, str(e)
    return model.state_dict(), notes


def _streamed(path, options):
    model = net()
    try:
        out = stream_checkpoint(model, CheckpointRef(path, path.name, 0), **options)
    except InputError as e:
        return None, str(e)
    return (model.state_dict(), out[1]) if out is not None else ("general", None)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_streaming_equals_the_state_dict_path(tmp_path, layout):
    path = tmp_path / "step_1.safetensors"
    save_file(LAYOUTS[layout](), str(path), {"step": "1"})
    taken = 0
    for options in OPTIONS:
        want, want_notes = _general(path, options)
        got, got_notes = _streamed(path, options)
        if got == "general":
            continue
        taken += 1
        assert got_notes == want_notes, options
        if want is None:
            continue
        assert set(got) == set(want)
        for k in want:
            assert torch.equal(got[k], want[k]), (options, k)
    assert taken >= 3, layout


def test_steps_aside_for_custom_loading_and_value_choices(tmp_path):
    path = tmp_path / "step_1.safetensors"
    save_file(_sd(), str(path))
    model = net()
    model[0].register_load_state_dict_pre_hook(lambda *a, **k: None)
    assert stream_checkpoint(model, CheckpointRef(path, path.name, 0)) is None
    same = {**{f"a.{k}": v for k, v in _sd().items()}, **{f"b.{k}": v for k, v in _sd().items()}}
    save_file(same, str(path))  # identical copies: one fit, but only values tell
    assert stream_checkpoint(net(), CheckpointRef(path, path.name, 0)) is None


def test_slices_cover_every_row(tmp_path, monkeypatch):
    monkeypatch.setattr(stream_mod, "SLICE_BYTES", 7 * 4 * 5)  # 7 rows of fc 0 a slice
    path = tmp_path / "step_1.safetensors"
    save_file(_sd(), str(path))
    model = net()
    assert stream_checkpoint(model, CheckpointRef(path, path.name, 0)) is not None
    for k, v in _sd().items():
        assert torch.equal(model.state_dict()[k], v), k
