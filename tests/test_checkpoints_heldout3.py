"""Held-out checkpoint layouts (qa_runs, issues 3 and 11): numbers in names that are metrics or
version tags, a Hugging Face output folder holding its final model beside its
``checkpoint-N`` folders, Lightning's ``WeightAveraging`` callbacks (the averaged weights in
``state_dict``, the raw ones in ``current_model_state``). Each is checked against the weights
loaded by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import yaml
from typer.testing import CliRunner

import alignctl
from alignctl.cli.assemble import app
from alignctl.runs.checkpoints import discover_checkpoints
from alignctl.runs.checkpoints.peek import number_in_name

MODEL = {"arch": "mlp", "in_features": 6, "hidden": [8, 8], "out_features": 3}


def _net(seed: int) -> torch.nn.Module:
    from alignctl.runs.models import build_model

    torch.manual_seed(seed)
    return build_model(MODEL, Path("."))


def _data():
    g = np.random.default_rng(0)
    return g.normal(size=(12, 6)).astype(np.float32), np.arange(12) % 3


def _run_dir(root: Path) -> Path:
    (root / "checkpoints").mkdir(parents=True)
    x, y = _data()
    np.savez(root / "d.npz", x_train=x, y_train=y)
    (root / "alignctl.yaml").write_text(yaml.safe_dump({"model": MODEL, "data": {"path": "d.npz"}}))
    return root


def _want(model: torch.nn.Module) -> dict:
    x, y = _data()
    got = alignctl.measure(model.eval(), torch.tensor(x), torch.tensor(y), metrics="fast",
                           device="cpu")  # fmt: skip
    return {k: float(v.mean()) for k, v in got.items()}


def _analyze(*args) -> dict:
    r = CliRunner().invoke(app, ["analyze", *map(str, args), "--json", "-", "--metrics", "fast",
                                 "--no-cache", "--device", "cpu"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def _assert_weights(checkpoints: list[dict], models: list[torch.nn.Module]) -> None:
    assert len(checkpoints) == len(models)
    for ck, model in zip(checkpoints, models, strict=True):
        for name, value in _want(model).items():
            assert ck["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), ck["name"]


# ---- steps in names: metrics and version tags are not steps ----------------------------------

NAMES = {
    # Lightning filename templates with a metric: the metric's digits were the step (35, 45...)
    "epoch=0-step=300-val_loss=0.25": 300,
    "epoch=3-val_acc=95": 3,
    "model_step100_loss8.1": 100,  # was 1: the decimal's fraction
    "ckpt_0001500_acc=95": 1500,
    "run_lr1e-3_7": 7,
    # Lightning's "-v1" for a name already taken: was step 1, placed first
    "epoch=0-step=20-v1": 20,
    "last-v1": None,
    "best-val_loss=0.25": None,  # an alias, not step 25
    # labelled steps win over later numbers
    "global_step1500_rank0": 1500,
    "iter_0001500": 1500,
    # unchanged
    "checkpoint-1500": 1500,
    "step_9": 9,
    "ckpt.100": 100,
    "epoch_3": 3,
    "best": None,
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_the_number_a_name_gives_is_its_step(name):
    assert number_in_name(name) == NAMES[name]


def test_metric_digits_in_names_never_order_the_run(tmp_path):
    """Loss falling as training goes on: by the metric's digits the order was reversed and the
    first checkpoint judged as the last, silently."""
    run = _run_dir(tmp_path / "run")
    seeds = {100: 1, 200: 2, 300: 3}
    for step, seed in seeds.items():
        loss = f"0.{9 - step // 100}5"
        safetensors.torch.save_file(
            _net(seed).state_dict(),
            run / "checkpoints" / f"step={step}-val_loss={loss}.safetensors",
        )
    torch.save(_net(2).state_dict(), run / "checkpoints" / "epoch=0-step=200-v1.pt")
    report = _analyze(run)
    assert [c["step"] for c in report["checkpoints"]] == [100, 200, 300]
    assert report["checkpoints"][-1]["name"] == "step=300-val_loss=0.65"
    assert any("same weights" in n and "200" in n for n in report["notes"]), report["notes"]
    _assert_weights(report["checkpoints"], [_net(s) for s in seeds.values()])


# ---- Lightning's WeightAveraging callbacks -------------------------------------------------


@pytest.mark.filterwarnings("ignore")
def test_lightning_ema_weight_averaging_raw_by_default_ema_when_asked(tmp_path):
    """Lightning 2.6's ``EMAWeightAveraging`` saves the averaged weights as ``state_dict`` and
    the raw ones as ``current_model_state``: the default (raw) analysed the EMA weights,
    silently, and ``--weights ema`` was refused ("no EMA copy found")."""
    L = pytest.importorskip("lightning")
    callbacks = pytest.importorskip("lightning.pytorch.callbacks")
    if not hasattr(callbacks, "EMAWeightAveraging"):
        pytest.skip("Lightning without WeightAveraging callbacks")
    from torch.utils.data import DataLoader, TensorDataset

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = _net(0)

        def training_step(self, batch, i):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    run = _run_dir(tmp_path / "run")
    save = callbacks.ModelCheckpoint(dirpath=run / "checkpoints", every_n_train_steps=2,
                                     save_top_k=-1)  # fmt: skip
    trainer = L.Trainer(max_steps=4, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
                        callbacks=[save, callbacks.EMAWeightAveraging(decay=0.5)])  # fmt: skip
    x, y = _data()
    trainer.fit(Lit(), DataLoader(TensorDataset(torch.tensor(x), torch.tensor(y)), batch_size=6))
    raw, ema = [], []
    for f in sorted((run / "checkpoints").glob("*.ckpt"), key=lambda p: number_in_name(p.stem)):
        ck = torch.load(f, weights_only=False)  # our own file, written just above
        for out, key in ((raw, "current_model_state"), (ema, "state_dict")):
            out.append(_net(0))
            out[-1].load_state_dict({k.removeprefix("model."): v for k, v in ck[key].items()})
    pairs = zip(raw[-1].parameters(), ema[-1].parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)
    report = _analyze(run)
    assert [c["step"] for c in report["checkpoints"]] == [2, 4]
    _assert_weights(report["checkpoints"], raw)
    assert any("EMA weights under 'state_dict'" in n for n in report["notes"]), report["notes"]
    _assert_weights(_analyze(run, "--weights", "ema")["checkpoints"], ema)


# ---- a Hugging Face output folder: checkpoint-N folders and the final model ------------------


@pytest.mark.filterwarnings("ignore")
def test_hugging_face_output_folder_keeps_its_checkpoints_and_final_model(tmp_path):
    """``trainer.save_model()`` puts the final model.safetensors beside the ``checkpoint-N``
    folders: the output folder was then read as one checkpoint (the final model), every
    ``checkpoint-N`` dropped without a word."""
    pytest.importorskip("transformers")
    from transformers import Trainer, TrainingArguments

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _net(0)

        def forward(self, x, labels=None):
            logits = self.net(x)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    x, y = _data()
    rows = [{"x": torch.tensor(x[i]), "labels": int(y[i])} for i in range(len(x))]
    out = tmp_path / "out"
    args = TrainingArguments(output_dir=str(out), max_steps=5, save_steps=2, learning_rate=0.5,
                             per_device_train_batch_size=6, report_to=[], use_cpu=True,
                             logging_strategy="no", disable_tqdm=True, seed=0)  # fmt: skip
    model = Net()
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    trainer.save_model()
    trainer.save_state()
    assert (out / "model.safetensors").is_file() and (out / "checkpoint-2").is_dir()
    (out / "alignctl.yaml").write_text(
        yaml.safe_dump({"model": MODEL, "data": {"path": str(tmp_path / "run" / "d.npz")}})
    )
    _run_dir(tmp_path / "run")
    final = _net(0)
    final.load_state_dict(model.net.state_dict())
    steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    want = []
    for step in steps:
        m = _net(0)
        state = safetensors.torch.load_file(out / f"checkpoint-{step}" / "model.safetensors")
        m.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
        want.append(m)
    report = _analyze(out)
    got = [(c["name"], c["step"]) for c in report["checkpoints"]]
    assert got == [(f"checkpoint-{s}", s) for s in steps] and steps[-1] == 5
    assert any("left out model.safetensors: a copy" in n for n in report["notes"]), report["notes"]
    _assert_weights(report["checkpoints"], want)
    # Without the last checkpoint folder, the final model is step 5 (trainer_state.json).
    shutil.rmtree(out / "checkpoint-5")
    report = _analyze(out)
    assert [(c["name"], c["step"]) for c in report["checkpoints"]] == [
        ("checkpoint-2", 2), ("checkpoint-4", 4), ("model", 5)
    ]  # fmt: skip
    _assert_weights(report["checkpoints"], [*want[:2], final])
    # Without the final model: the checkpoint folders, as before.
    (out / "model.safetensors").unlink()
    found = discover_checkpoints(out)
    assert [r.name for r in found] == ["checkpoint-2", "checkpoint-4"]


def test_a_sharded_final_model_beside_checkpoint_folders_is_named_not_split(tmp_path):
    """Its shards are not checkpoints of their own (each would miss half the keys)."""
    out = tmp_path / "out"
    for step in (2, 4):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        safetensors.torch.save_file(
            _net(step).state_dict(), out / f"checkpoint-{step}" / "model.safetensors"
        )
    state = _net(9).state_dict()
    names = sorted(state)
    weight_map = {}
    for i, part in enumerate((names[:3], names[3:]), 1):
        shard = f"model-0000{i}-of-00002.safetensors"
        safetensors.torch.save_file({k: state[k] for k in part}, out / shard)
        weight_map.update(dict.fromkeys(part, shard))
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    notes: list[str] = []
    found = discover_checkpoints(out, notes)
    assert [(r.name, r.step) for r in found] == [("checkpoint-2", 2), ("checkpoint-4", 4)]
    assert any("left out the sharded model model.safetensors.index.json" in n for n in notes)


# ---- a model's own child named "module" ----------------------------------------------------

WRAPPER = """
import torch.nn as nn
class Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.module = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
        self.head = nn.Linear(8, 3)
    def forward(self, x):
        return self.head(self.module(x))
"""


def _wrapped(seed: int) -> torch.nn.Module:
    ns: dict = {}
    exec(WRAPPER, ns)
    torch.manual_seed(seed)
    return ns["Wrapped"]()


@pytest.mark.parametrize(
    ("rename", "suffix"),
    [
        (lambda k: k, ".pt"),
        (lambda k: k, ".safetensors"),
        (lambda k: "module." + k, ".pt"),  # the wrapper model under DDP
        (lambda k: "_orig_mod.module." + k, ".safetensors"),  # ... compiled
    ],
)
def test_a_models_own_child_named_module_keeps_its_name(tmp_path, rename, suffix):
    """Every key's leading ``module.`` was dropped as if DDP's: the model's own
    ``state_dict()`` was refused ("missing keys head.weight ...; unexpected keys head.weight")."""
    run = _run_dir(tmp_path / "run")
    (run / "models.py").write_text(WRAPPER + "def make():\n    return Wrapped()\n")
    cfg = {"model": {"factory": "models.py:make"}, "data": {"path": "d.npz"}}
    (run / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    state = {rename(k): v for k, v in _wrapped(1).state_dict().items()}
    if suffix == ".pt":
        torch.save(state, run / "checkpoints" / "step_1.pt")
    else:
        safetensors.torch.save_file(state, run / "checkpoints" / "step_1.safetensors")
    _assert_weights(_analyze(run)["checkpoints"], [_wrapped(1)])


def test_plain_keys_beside_a_ddp_copy_are_a_choice_not_a_merge(tmp_path):
    """``0.weight`` and ``module.0.weight`` both stripped to ``0.weight``: one silently won."""
    run = _run_dir(tmp_path / "run")
    state = {**_net(1).state_dict(), **{"module." + k: v for k, v in _net(2).state_dict().items()}}
    torch.save(state, run / "checkpoints" / "step_1.pt")
    r = CliRunner().invoke(app, ["analyze", str(run), "--metrics", "fast", "--no-cache"])
    assert r.exit_code == 2 and "several different copies" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    got = _analyze(run, "--state-key", "module")
    _assert_weights(got["checkpoints"], [_net(2)])


# ---- a data file that pickles objects --------------------------------------------------------


class _Payload:
    def __reduce__(self):
        return (eval, ("open('PWNED', 'w')",))


def test_a_pickled_object_in_a_data_file_is_named_without_torchs_advice(tmp_path, monkeypatch):
    """The error was torch's 1000-character text, which advises loading with
    weights_only=False (running the payload)."""
    monkeypatch.chdir(tmp_path)
    run = _run_dir(tmp_path / "run")
    torch.save(_net(1).state_dict(), run / "checkpoints" / "step_1.pt")
    x, y = _data()
    torch.save({"x_train": torch.tensor(x), "y_train": torch.tensor(y), "z": _Payload()},
               run / "d.pt")  # fmt: skip
    (run / "alignctl.yaml").write_text(yaml.safe_dump({"model": MODEL, "data": {"path": "d.pt"}}))
    r = CliRunner().invoke(app, ["analyze", str(run), "--metrics", "fast", "--no-cache"])
    assert r.exit_code == 2 and not (tmp_path / "PWNED").exists()
    (line,) = r.stderr.strip().splitlines()
    assert "refused" in line and "pickled eval object" in line and len(line) < 300, line
    assert "weights_only" not in line and "False" not in line


def test_a_named_optimizer_state_with_one_parameter_is_skipped_not_read_as_weights(tmp_path):
    """An optimizer's state_dict keyed by parameter name (named optimizers) with one parameter
    (`{'state': {'0.weight': {...}}, 'param_groups': [...]}`) was taken for weights: exit 2
    instead of skipping the file beside the model's checkpoints."""
    run = _run_dir(tmp_path / "run")
    net = _net(0)
    torch.save(net.state_dict(), run / "checkpoints" / "step_5.pt")
    t = torch.zeros(8, 6)
    optim = {"state": {"0.weight": {"step": torch.tensor(5.0), "exp_avg": t, "exp_avg_sq": t}},
             "param_groups": [{"lr": 1e-3, "params": ["0.weight"]}]}  # fmt: skip
    torch.save(optim, run / "checkpoints" / "optim_step_5.pt")
    report = _analyze(run)
    assert [c["step"] for c in report["checkpoints"]] == [5]
    assert any("optim_step_5.pt" in n and "optimizer" in n for n in report["notes"])
    assert report["checkpoints"][0]["metrics"]["centroid_norm"] == pytest.approx(
        _want(net)["centroid_norm"], rel=1e-5
    )
