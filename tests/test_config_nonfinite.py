"""Non-finite numbers (YAML's .inf / .nan) in a run config: a built-in task's or
architecture's parameter is refused with one line naming it; a user factory's kwargs are its
own (the analysis cache keys them instead of crashing). Generated from the registries."""

import inspect
import json
import math

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.runs.models import MODELS, build_model
from alignctl.runs.tasks import TASKS, load_data

BAD = [math.inf, -math.inf, math.nan]


def _numeric_params(fn):
    return [n for n, p in inspect.signature(fn).parameters.items()
            if type(p.default) in (int, float)]  # fmt: skip


TASK_CASES = [(t, n) for t in TASKS.names() for n in _numeric_params(TASKS.get(t))]
MODEL_CASES = [(a, n) for a in MODELS.names() for n in _numeric_params(MODELS.get(a))]


def test_the_registries_give_cases():
    assert len(TASK_CASES) >= 10 and len(MODEL_CASES) >= 5


@pytest.mark.parametrize("bad", BAD, ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("task, name", TASK_CASES)
def test_a_task_parameter_must_be_finite(tmp_path, task, name, bad):
    with pytest.raises(InputError, match=rf"task '{task}': {name} must be a finite number"):
        load_data({"task": task, name: bad}, tmp_path)


@pytest.mark.parametrize("bad", BAD, ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("arch, name", MODEL_CASES)
def test_an_architecture_parameter_must_be_finite(tmp_path, arch, name, bad):
    with pytest.raises(InputError, match=rf"model arch '{arch}': {name}"):
        build_model({"arch": arch, name: bad}, tmp_path)


def test_a_nested_value_is_named(tmp_path):
    with pytest.raises(InputError, match=r"hidden\[1\] must be a finite number, got inf"):
        build_model({"arch": "mlp", "in_features": 4, "hidden": [8, math.inf],
                     "out_features": 2}, tmp_path)  # fmt: skip


def _run(root, model: dict, data: dict | None = None):
    from alignctl.runs.checkpoints import write_checkpoint

    root.mkdir()
    g = np.random.default_rng(0)
    x = g.normal(size=(24, 4)).astype(np.float32)
    np.savez(root / "data.npz", x_train=x, y_train=(x[:, 0] > 0).astype(np.int64))
    cfg = {"model": model, "data": data or {"path": "data.npz"}}
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    write_checkpoint(root / "checkpoints" / "step_00000001.safetensors", net.state_dict(),
                     {"step": 1})  # fmt: skip
    return root


@pytest.mark.parametrize("where", ["alignctl.yaml", "cli"])
def test_cli_one_error_line_for_an_infinite_builtin_parameter(tmp_path, where):
    root = _run(tmp_path / "r", {"arch": "mlp", "in_features": 4, "hidden": [6],
                                 "out_features": 2})  # fmt: skip
    cfg = yaml.safe_load((root / "alignctl.yaml").read_text())
    cfg["data"] = {"task": "sparse-parity", "train_fraction": math.inf}
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(app, ["analyze", str(root), "--json", str(tmp_path / "o.json")])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: task 'sparse-parity': train_fraction must be a finite")
    assert "internal error" not in r.stderr and not (tmp_path / "o.json").exists()


def test_a_factory_may_take_an_infinite_kwarg_and_is_cached(tmp_path, monkeypatch):
    """qa: the cache key's strict JSON raised on `kwargs: {clip: .inf}` (internal error)."""
    monkeypatch.delenv("ALIGNCTL_CACHE", raising=False)
    (tmp_path / "nets.py").write_text(
        "import torch\n\n\ndef make(clip=1.0):\n"
        "    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(),"
        " torch.nn.Linear(6, 2))\n"
    )
    root = _run(tmp_path / "r", {"factory": f"{tmp_path / 'nets.py'}:make",
                                 "kwargs": {"clip": math.inf}})  # fmt: skip
    outs = []
    for _ in range(2):
        r = CliRunner().invoke(app, ["analyze", str(root), "--metrics", "fast", "--json", "-"])
        assert r.exit_code == 0, r.stderr
        outs.append(json.loads(r.stdout)["checkpoints"][0]["metrics"])
    assert outs[0] == outs[1]
    assert any((root / ".alignctl-cache").iterdir())  # keyed and stored
