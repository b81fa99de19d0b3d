"""Run discovery: which config, checkpoints, model and data ``analyze PATH`` loads."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from alignctl import open_run
from alignctl.errors import InputError
from alignctl.runs.checkpoints import load_weights, read_checkpoint, write_checkpoint

MODEL = {"arch": "mlp", "in_features": 4, "hidden": [5], "out_features": 3}
DATA = {"task": "sparse-parity", "n": 20, "n_bits": 4, "k": 2}


@pytest.fixture(autouse=True)
def stand_ins(monkeypatch):
    """alignctl.config / alignctl.tasks stand-ins when the real ones are not there yet."""
    try:
        import alignctl.runs.config  # noqa: F401
    except ImportError:
        monkeypatch.setitem(sys.modules, "alignctl.config", _fake_config())
    try:
        import alignctl.runs.tasks as tasks

        tasks.load_data  # noqa: B018
    except (ImportError, AttributeError):
        fake = types.ModuleType("alignctl.tasks")
        fake.load_data = lambda spec, base_dir: ("dataset", dict(spec), Path(base_dir))
        monkeypatch.setitem(sys.modules, "alignctl.tasks", fake)


def _fake_config() -> types.ModuleType:
    @dataclass
    class Config:
        model: dict | None
        data: dict | None
        path: Path | None
        base_dir: Path
        train: dict = field(default_factory=dict)
        grokked: dict = field(default_factory=dict)
        verdict: dict = field(default_factory=dict)

    def config_from_dict(d, base_dir, source="", path=None):
        return Config(d.get("model"), d.get("data"), path, Path(base_dir))

    def load_config(path):
        path = Path(path)
        if not path.is_file():
            raise InputError(f"config {path} not found")
        return config_from_dict(yaml.safe_load(path.read_text()) or {}, path.parent, path=path)

    mod = types.ModuleType("alignctl.config")
    mod.Config, mod.config_from_dict, mod.load_config = Config, config_from_dict, load_config
    return mod


def _weights() -> dict:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 5), torch.nn.ReLU())
    net.append(torch.nn.Linear(5, 3))
    return net.state_dict()


def _run_dir(tmp_path: Path, *, beside: bool = False, config: dict | None = None) -> Path:
    run = tmp_path / "run"
    ckpts = run if beside else run / "checkpoints"
    ckpts.mkdir(parents=True)
    for step in (20, 3):
        write_checkpoint(ckpts / f"step_{step}.safetensors", _weights(), {"step": step})
    if config is not False:
        cfg = config if config is not None else {"model": MODEL, "data": DATA}
        (run / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    return run


def _names(run) -> list[str]:
    return [r.name for r in run.checkpoints]


def test_run_directory_with_checkpoints_folder(tmp_path):
    run_dir = _run_dir(tmp_path)
    run = open_run(run_dir)
    assert run.root == run_dir
    assert _names(run) == ["step_3", "step_20"]
    assert run.config.model == MODEL and run.config.data == DATA
    model = run.build_model()
    load_weights(model, read_checkpoint(run.checkpoints[0])[0], "step_3")  # it fits


def test_checkpoints_beside_config(tmp_path):
    run = open_run(_run_dir(tmp_path, beside=True))
    assert _names(run) == ["step_3", "step_20"]


def test_checkpoint_folder_with_config_in_parent(tmp_path):
    run_dir = _run_dir(tmp_path)
    run = open_run(run_dir / "checkpoints")
    assert run.root == run_dir and _names(run) == ["step_3", "step_20"]
    assert run.config.model == MODEL


@pytest.mark.parametrize("beside", [False, True])
def test_single_checkpoint_file(tmp_path, beside):
    run_dir = _run_dir(tmp_path, beside=beside)
    folder = run_dir if beside else run_dir / "checkpoints"
    run = open_run(folder / "step_20.safetensors")
    assert run.root == run_dir and _names(run) == ["step_20"]
    assert run.config.data == DATA


def test_trainer_state_folder_is_ignored(tmp_path):
    run_dir = _run_dir(tmp_path)
    state = run_dir / "checkpoints" / "state"
    state.mkdir()
    torch.save({"step": 3}, state / "step_00000003.pt")
    assert _names(open_run(run_dir)) == ["step_3", "step_20"]


def test_load_data_is_cached(tmp_path):
    run = open_run(_run_dir(tmp_path))
    first = run.load_data()
    assert run.load_data() is first


def test_config_override(tmp_path):
    run_dir = _run_dir(tmp_path)
    other = tmp_path / "elsewhere.yaml"
    other.write_text(yaml.safe_dump({"model": {**MODEL, "hidden": [9]}, "data": DATA}))
    run = open_run(run_dir, config=other)
    assert run.config.model["hidden"] == [9]
    with pytest.raises(InputError, match="does not fit the model"):
        load_weights(run.build_model(), read_checkpoint(run.checkpoints[0])[0], "step_3")


def test_no_config_anywhere(tmp_path):
    run_dir = _run_dir(tmp_path, config=False)
    with pytest.raises(InputError) as info:
        open_run(run_dir / "checkpoints")
    msg = str(info.value)
    assert "no alignctl.yaml found in" in msg and "checkpoints" in msg
    assert "pass --config or --model and --data" in msg


def test_model_and_data_flags_without_config(tmp_path, monkeypatch):
    run_dir = _run_dir(tmp_path, config=False)
    (tmp_path / "net.py").write_text(
        "import torch\n"
        "def make():\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 5),\n"
        "                               torch.nn.ReLU(), torch.nn.Linear(5, 3))\n"
    )
    monkeypatch.chdir(tmp_path)  # --model paths are relative to the current directory
    run = open_run(run_dir, model="net.py:make", data="sparse-parity")
    assert run.config.model == {"factory": f"{tmp_path.resolve() / 'net.py'}:make"}
    assert run.config.data == {"task": "sparse-parity"}
    load_weights(run.build_model(), read_checkpoint(run.checkpoints[1])[0], "step_20")


@pytest.mark.parametrize("given", ["model", "data"])
def test_only_one_flag_says_which_is_missing(tmp_path, given):
    run_dir = _run_dir(tmp_path, config=False)
    kwargs = {"model": "cnn"} if given == "model" else {"data": "sparse-parity"}
    missing = "data" if given == "model" else "model"
    with pytest.raises(InputError, match=f"cannot tell the {missing}.*--{missing}"):
        open_run(run_dir, **kwargs)


def test_config_without_model_section(tmp_path):
    run_dir = _run_dir(tmp_path, config={"data": DATA})
    with pytest.raises(InputError, match="alignctl.yaml has no model section; pass --model"):
        open_run(run_dir)


def test_model_arch_flag_reuses_config_sizes(tmp_path):
    run = open_run(_run_dir(tmp_path), model="mlp")
    assert run.config.model == MODEL


def test_model_arch_flag_without_sizes_asks_for_config(tmp_path):
    run_dir = _run_dir(tmp_path, config={"model": {"arch": "cnn"}, "data": DATA})
    with pytest.raises(InputError, match="in_features.*pass --config"):
        open_run(run_dir, model="mlp")


def test_data_flag(tmp_path):
    run_dir = _run_dir(tmp_path)
    assert open_run(run_dir, data="sparse-parity").config.data == DATA  # same task: keeps params
    assert open_run(run_dir, data="digits").config.data == {"task": "digits"}
    data_file = tmp_path / "d.npz"
    data_file.write_bytes(b"x")
    run = open_run(run_dir, data=str(data_file))
    assert run.config.data == {"path": str(data_file.resolve())}
    with pytest.raises(InputError, match="missing.npz"):
        open_run(run_dir, data=str(tmp_path / "missing.npz"))


def test_bad_paths(tmp_path):
    with pytest.raises(InputError, match="nowhere"):
        open_run(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match="notes.txt is not a checkpoint file"):
        open_run(tmp_path / "notes.txt")
    run_dir = _run_dir(tmp_path)
    for f in (run_dir / "checkpoints").iterdir():
        f.unlink()
    with pytest.raises(InputError, match="empty"):
        open_run(run_dir)
