"""Checkpoint formats, discovery order, error paths and atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from alignctl.errors import InputError
from alignctl.runs.atomic import atomic_save_safetensors, atomic_torch_save, atomic_write
from alignctl.runs.checkpoints import (
    CheckpointRef,
    discover_checkpoints,
    is_finite_state,
    load_weights,
    read_checkpoint,
    write_checkpoint,
)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def _state(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in _model().state_dict().items()}


def _one(path: Path) -> tuple[dict, dict]:
    (ref,) = discover_checkpoints(path)
    return read_checkpoint(ref)


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _ref(path: Path) -> CheckpointRef:
    return CheckpointRef(path, path.stem, None)


# ------------------------------------------------------------------ round trips


def test_safetensors_round_trip_with_metadata(tmp_path):
    sd = _state()
    write_checkpoint(tmp_path / "ckpt.safetensors", sd, {"step": 40, "note": "hi", "lr": 0.5})
    (ref,) = discover_checkpoints(tmp_path)
    assert ref.step == 40 and ref.name == "ckpt"
    got, meta = read_checkpoint(ref)
    _assert_same(got, sd)
    assert meta == {"step": 40, "note": "hi", "lr": 0.5}


def test_safetensors_global_step_string(tmp_path):
    save_file(_state(), str(tmp_path / "a_7.safetensors"), metadata={"global_step": "123"})
    assert discover_checkpoints(tmp_path)[0].step == 123


def test_pt_plain(tmp_path):
    sd = _state()
    torch.save(sd, tmp_path / "step_3.pt")
    (ref,) = discover_checkpoints(tmp_path)
    assert ref.step == 3
    got, meta = read_checkpoint(ref)
    _assert_same(got, sd)
    assert meta == {}


@pytest.mark.parametrize("key", ["state_dict", "model", "model_state_dict"])
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_pt_nested(tmp_path, key, suffix):
    sd = _state()
    obj = {key: sd, "step": 99, "epoch": 4, "optimizer": {"state": {}, "param_groups": []}}
    torch.save(obj, tmp_path / f"whatever_5{suffix}")
    (ref,) = discover_checkpoints(tmp_path)
    assert ref.step == 99  # metadata wins over the number in the name, epoch is not a step
    got, meta = read_checkpoint(ref)
    _assert_same(got, sd)
    assert meta["step"] == 99 and meta["epoch"] == 4


def test_lightning_ckpt_prefix_is_stripped_on_load(tmp_path):
    sd = _state()
    obj = {
        "state_dict": {f"net.{k}": v for k, v in sd.items()},
        "global_step": 250,
        "epoch": 2,
        "pytorch-lightning_version": "2.3.0",
    }
    torch.save(obj, tmp_path / "epoch=2-step=250.ckpt")
    (ref,) = discover_checkpoints(tmp_path)
    assert ref.step == 250
    got, meta = read_checkpoint(ref)
    assert all(k.startswith("net.") for k in got)
    model = _model()
    load_weights(model, got, ref.name)
    _assert_same(model.state_dict(), sd)


def test_direct_match_preferred_over_prefix_strip(tmp_path):
    # Every key of a plain Sequential-in-a-wrapper model starts with "body.": a direct match
    # must be used as is, not stripped.
    model = torch.nn.Sequential()
    model.add_module("body", torch.nn.Linear(2, 2))
    sd = {k: torch.full_like(v, 3.0) for k, v in model.state_dict().items()}
    load_weights(model, sd, "x")
    assert torch.equal(model.body.weight, torch.full((2, 2), 3.0))


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefixes_stripped(tmp_path, prefix):
    sd = _state()
    torch.save({f"{prefix}{k}": v for k, v in sd.items()}, tmp_path / "c.pt")
    got, _ = _one(tmp_path)
    _assert_same(got, sd)


def test_hf_folder_single(tmp_path):
    sd = _state()
    run = tmp_path / "checkpoint-500"
    run.mkdir()
    save_file(sd, str(run / "model.safetensors"))
    (run / "config.json").write_text("{}")
    for target in (run, tmp_path):  # the folder itself, or a folder holding it
        (ref,) = discover_checkpoints(target)
        assert ref.path == run and ref.name == "checkpoint-500" and ref.step == 500
        _assert_same(read_checkpoint(ref)[0], sd)


def test_hf_folder_sharded(tmp_path):
    sd = _state()
    keys = sorted(sd)
    half = {k: sd[k] for k in keys[:2]}, {k: sd[k] for k in keys[2:]}
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    for part, name in zip(half, names, strict=True):
        save_file(part, str(tmp_path / name))
    wmap = {k: names[0] if k in half[0] else names[1] for k in keys}
    index = {"metadata": {"total_size": 1}, "weight_map": wmap}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    got, meta = _one(tmp_path)
    _assert_same(got, sd)
    assert meta["total_size"] == 1


def test_hf_folder_missing_shard(tmp_path):
    wmap = {"0.weight": "model-00001-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wmap}))
    with pytest.raises(InputError, match="model-00001-of-00002.safetensors"):
        _one(tmp_path)


def test_hf_pytorch_model_bin(tmp_path):
    sd = _state()
    torch.save(sd, tmp_path / "pytorch_model.bin")
    _assert_same(_one(tmp_path)[0], sd)


# ------------------------------------------------------------------ discovery


def test_natural_order_and_filtering(tmp_path):
    sd = _state()
    for n in (10, 9, 100, 1):
        torch.save(sd, tmp_path / f"step_{n}.pt")
    save_file(sd, str(tmp_path / "final.safetensors"))  # a copy of step_100
    save_file(_state(7), str(tmp_path / "best.safetensors"))  # no step, other weights
    for junk in ("alignctl.yaml", "log.jsonl", "meta.json", "data.npz", "f.py", ".hidden.pt"):
        (tmp_path / junk).write_text("x")
    (tmp_path / ".step_5.pt.tmp-abc123").write_bytes(b"partial")
    state = tmp_path / "state"  # trainer resume state: never analysed
    state.mkdir()
    torch.save(sd, state / "step_00000010.pt")
    save_file(sd, str(state / "model.safetensors"))
    notes: list[str] = []
    names = [r.name for r in discover_checkpoints(tmp_path, notes)]
    # Unnumbered aliases never become the last checkpoint: a copy is dropped, the rest left out.
    assert names == ["step_1", "step_9", "step_10", "step_100"]
    assert any("left out best.safetensors: it records no step" in n for n in notes), notes
    assert any("left out final.safetensors: the same weights as step_100.pt" in n for n in notes)


def test_metadata_step_orders_before_name(tmp_path):
    sd = _state()
    write_checkpoint(tmp_path / "b.safetensors", sd, {"step": 5})
    write_checkpoint(tmp_path / "a_50.safetensors", sd, {"step": 7})
    write_checkpoint(tmp_path / "c_6.safetensors", sd, {})
    assert [r.step for r in discover_checkpoints(tmp_path)] == [5, 6, 7]


def test_single_file(tmp_path):
    torch.save(_state(), tmp_path / "x.pt")
    (ref,) = discover_checkpoints(tmp_path / "x.pt")
    assert ref.step is None and ref.name == "x"


# ------------------------------------------------------------------ errors


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="nope"):
        discover_checkpoints(tmp_path / "nope")


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match="empty"):
        discover_checkpoints(tmp_path)


def test_folder_without_checkpoints_lists_suffixes(tmp_path):
    (tmp_path / "alignctl.yaml").write_text("a: 1")
    with pytest.raises(InputError, match=r"\.safetensors.*\.pt.*\.ckpt"):
        discover_checkpoints(tmp_path)


def test_non_checkpoint_single_file(tmp_path):
    (tmp_path / "a.yaml").write_text("a: 1")
    with pytest.raises(InputError, match="a.yaml"):
        discover_checkpoints(tmp_path / "a.yaml")


@pytest.mark.parametrize("kind", ["zero", "truncated", "garbage"])
def test_broken_safetensors(tmp_path, kind):
    good = tmp_path / "good.safetensors"
    save_file(_state(), str(good))
    data = {"zero": b"", "truncated": good.read_bytes()[:200], "garbage": b"not a file" * 50}
    bad = tmp_path / "bad_3.safetensors"
    bad.write_bytes(data[kind])
    with pytest.raises(InputError, match="bad_3.safetensors"):
        read_checkpoint(_ref(bad))


@pytest.mark.parametrize("kind", ["zero", "truncated", "garbage"])
def test_broken_pt(tmp_path, kind):
    good = tmp_path / "good.pt"
    torch.save(_state(), good)
    data = {"zero": b"", "truncated": good.read_bytes()[:300], "garbage": b"not a file" * 50}
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[kind])
    with pytest.raises(InputError, match="bad.pt"):
        read_checkpoint(_ref(bad))


class _Evil:
    """Unpickling this would create the marker file (arbitrary code execution)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("where", ["top", "inside"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, where):
    marker = tmp_path / "pwned"
    evil = _Evil(str(marker))
    obj = evil if where == "top" else {"state_dict": {"w": torch.zeros(2), "x": evil}}
    torch.save(obj, tmp_path / "evil_1.pt")
    assert not marker.exists()
    # Discovery peeks at every file (must not run code either); the file is no weights.
    if where == "top":
        with pytest.raises(InputError, match=r"evil_1.pt \(a pickled _?io.open object \(never"):
            discover_checkpoints(tmp_path)
    else:
        with pytest.raises(InputError, match=r"evil_1.pt refused: not a plain weights file"):
            read_checkpoint(discover_checkpoints(tmp_path)[0])
    with pytest.raises(InputError, match=r"evil_1.pt"):
        read_checkpoint(_ref(tmp_path / "evil_1.pt"))
    assert not marker.exists()


def test_pt_without_state_dict(tmp_path):
    torch.save({"step": 3, "config": {"lr": 1}}, tmp_path / "opt.pt")
    with pytest.raises(InputError, match=r"no model checkpoints in .*opt.pt \(a dict without"):
        _one(tmp_path)
    with pytest.raises(InputError, match="opt.pt holds no state dict"):
        read_checkpoint(_ref(tmp_path / "opt.pt"))
    torch.save([torch.zeros(1)], tmp_path / "opt.pt")
    with pytest.raises(InputError, match=r"opt.pt is not a model checkpoint: it holds a list"):
        discover_checkpoints(tmp_path / "opt.pt")
    with pytest.raises(InputError, match="opt.pt holds no state dict"):
        read_checkpoint(_ref(tmp_path / "opt.pt"))


def test_non_tensor_values(tmp_path):
    torch.save({"w": torch.zeros(2), "b": 3}, tmp_path / "mixed.pt")
    with pytest.raises(InputError, match="mixed.pt.*'b' is a int"):
        _one(tmp_path)


def test_load_weights_mismatch_messages():
    model = _model()
    sd = _state()
    sd["extra.weight"] = torch.zeros(1)
    del sd["2.bias"]
    sd["0.weight"] = torch.zeros(7, 4)
    with pytest.raises(InputError) as info:
        load_weights(model, sd, "step_10.pt")
    msg = str(info.value)
    assert msg.startswith("checkpoint step_10.pt does not fit the model: ")
    assert "missing keys 2.bias" in msg and "unexpected keys extra.weight" in msg
    assert "shape mismatch for 0.weight: checkpoint (7, 4) vs model (3, 4)" in msg
    assert "\n" not in msg


def test_load_weights_casts_dtype_and_is_strict():
    model = _model()
    sd = {k: v.double() for k, v in _state().items()}
    load_weights(model, sd, "x")
    assert model[0].weight.dtype == torch.float32
    assert torch.allclose(model[0].weight, sd["0.weight"].float())
    with pytest.raises(InputError, match="missing keys 0.bias"):
        load_weights(model, {k: v for k, v in sd.items() if k != "0.bias"}, "x")


def test_is_finite_state():
    sd = _state()
    assert is_finite_state(sd)
    sd["0.bias"][1] = float("nan")
    assert not is_finite_state(sd)
    assert not is_finite_state({"w": torch.tensor([float("inf")])})
    assert is_finite_state({"n": torch.tensor([3], dtype=torch.int64)})


# ------------------------------------------------------------------ atomic writes


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "ckpt.safetensors"
    target.write_bytes(b"old contents")

    def bad_writer(tmp: Path) -> None:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, bad_writer)
    assert target.read_bytes() == b"old contents"
    assert sorted(os.listdir(tmp_path)) == ["ckpt.safetensors"]  # temp file removed


def test_atomic_savers_replace_and_leave_no_temp(tmp_path):
    target = tmp_path / "w.safetensors"
    target.write_bytes(b"old")
    lin = torch.nn.Linear(3, 3)
    tied = {"a": lin.weight, "b": lin.weight, "c": lin.weight.t()}  # shared + non-contiguous
    atomic_save_safetensors(tied, target, {"k": "v"})
    got, meta = read_checkpoint(_ref(target))
    assert torch.equal(got["b"], lin.weight) and torch.equal(got["c"], lin.weight.t())
    assert meta == {"k": "v"}
    atomic_torch_save({"x": torch.ones(2)}, tmp_path / "t.pt")
    assert sorted(os.listdir(tmp_path)) == ["t.pt", "w.safetensors"]
