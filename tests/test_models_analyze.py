"""`alignctl analyze` / `train` on models and data as users write them (issue 11, issue 16
item 6): runs built in temporary folders from a model file, a data file and checkpoints."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

import alignctl
from alignctl.cli.assemble import app

MODELS = """
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16, bias=False), nn.Linear(16, 3, bias=False)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class DictOut(MLP):
    def forward(self, x):
        return {"features": x, "scores": super().forward(x)}


class TupleInPlace(MLP):
    def forward(self, x):
        x /= 255                      # uint8 images scaled in the model, in place
        return super().forward(x), x  # (logits, features)


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(11, 4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))

    def forward(self, idx):
        return self.head(self.wte(idx))


def mlp():
    torch.manual_seed(0)
    return MLP()


def dict_out():
    torch.manual_seed(0)
    return DictOut()


def tuple_in_place():
    torch.manual_seed(0)
    return TupleInPlace()


def tokens():
    torch.manual_seed(0)
    return Tokens()
"""


def make_run(root: Path, factory: str, x, *, scales=(1.0,), model_extra=None) -> Path:
    """alignctl.yaml + models.py + data.npz + one checkpoint per weight scale."""
    root.mkdir(parents=True)
    (root / "models.py").write_text(MODELS)
    g = np.random.default_rng(0)
    y = g.integers(0, 3, len(x))
    np.savez(root / "data.npz", x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    model = {"factory": f"models.py:{factory}", **(model_extra or {})}
    cfg = {"model": model, "data": {"path": "data.npz"}}
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    (root / "checkpoints").mkdir()
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"m_{root.name}", root / "models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sd = getattr(mod, factory)().state_dict()
    for i, s in enumerate(scales):
        save_file(
            {k: v * s for k, v in sd.items()}, str(root / f"checkpoints/step_{i}.safetensors")
        )
    return root


def run_cli(*args):
    r = CliRunner().invoke(app, ["analyze", *map(str, args)])
    return r, (json.loads(r.stdout) if r.exit_code == 0 and "-" in args else None)


@pytest.mark.parametrize("metrics", ["standard", "fast"])
def test_extreme_scales_one_diverged_checkpoint_never_aborts_the_run(tmp_path, metrics):
    x = np.random.default_rng(1).normal(size=(30, 8)).astype(np.float32)
    root = make_run(tmp_path / "r", "mlp", x, scales=(1.0, 1e-12, 1e12, 1e30, 1.0))
    r, report = run_cli(root, "--metrics", metrics, "--json", "-")
    assert r.exit_code == 0, r.stderr
    cks = report["checkpoints"]
    assert [c["diverged"] for c in cks] == [False, False, False, True, False]
    assert "not finite" in cks[3]["reason"] and cks[0]["reason"] is None
    assert any("step_3: diverged" in n for n in report["notes"])
    base = cks[0]["metrics"]
    for c in (cks[1], cks[2]):  # bias-free ReLU: J scales by s^2, alignments do not move
        for name in ("centroid_alignment", "jacobian_alignment", "jacobian_pc1",
                     "jacobian_erank"):  # fmt: skip
            if name in base:
                assert c["metrics"][name] == pytest.approx(base[name], abs=1e-4), name


def test_uint8_images_in_place_forward_and_tuple_outputs(tmp_path):
    x = np.random.default_rng(2).integers(0, 256, size=(24, 8)).astype(np.uint8)
    root = make_run(tmp_path / "r", "tuple_in_place", x)
    run = alignctl.open_run(root)
    data = run.load_data()
    before = data.x_train.clone()
    report = alignctl.analyze(run, device="cpu")
    assert torch.equal(run.load_data().x_train, before)  # the model divided copies only
    ck = report["checkpoints"][0]
    assert not ck["diverged"] and ck["train_accuracy"] is not None

    from test_models_real import reference

    from alignctl.runs.models import build_model

    net = build_model(run.config.model, run.config.base_dir)  # the weights of step_0
    ref = reference(net, before.double(), data.y_train)  # J with respect to the data as given
    for name, value in ck["metrics"].items():
        assert value == pytest.approx(float(np.mean(ref[name])), rel=1e-4, abs=1e-5), name


def test_output_option_and_config_key(tmp_path):
    x = np.random.default_rng(3).normal(size=(12, 8)).astype(np.float32)
    root = make_run(tmp_path / "r", "dict_out", x)
    r, _ = run_cli(root, "--quiet")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--output" in r.stderr and "scores" in r.stderr
    r, report = run_cli(root, "--output", "scores", "--json", "-", "--max-memory", "64MiB",
                        "--threads", "1")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    root2 = make_run(tmp_path / "r2", "dict_out", x, model_extra={"output": "scores"})
    r2, report2 = run_cli(root2, "--json", "-")
    assert r2.exit_code == 0, r2.stderr
    assert report2["checkpoints"][0]["metrics"] == report["checkpoints"][0]["metrics"]


def test_token_data_without_the_protocol(tmp_path):
    x = np.random.default_rng(4).integers(0, 11, size=(16, 2)).astype(np.int64)
    root = make_run(tmp_path / "r", "tokens", x)
    r, report = run_cli(root, "--json", "-")
    assert r.exit_code == 0, r.stderr
    assert not report["checkpoints"][0]["diverged"]


@pytest.mark.parametrize("args, fragment", [
    (["--max-memory", "lots"], "memory budget"), (["--threads", "0"], "threads"),
    (["--output", "nope"], "output 'nope'"),
])  # fmt: skip
def test_bad_options_exit_2_with_one_line(tmp_path, args, fragment):
    x = np.random.default_rng(5).normal(size=(10, 8)).astype(np.float32)
    root = make_run(tmp_path / "r", "mlp", x)
    r, _ = run_cli(root, "--quiet", *args)
    assert r.exit_code == 2, r.stdout
    err = r.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and fragment in err, err


def test_train_on_uint8_images_with_tuple_outputs_and_grokalign(tmp_path):
    x = np.random.default_rng(6).integers(0, 256, size=(32, 8)).astype(np.uint8)
    root = make_run(tmp_path / "d", "tuple_in_place", x)
    cfg = yaml.safe_load((root / "alignctl.yaml").read_text())
    cfg["model"]["factory"] = f"{root / 'models.py'}:tuple_in_place"
    cfg["data"]["path"] = str(root / "data.npz")
    cfg["train"] = {"epochs": 2, "batch_size": 16, "regularisers": [{"name": "grokalign"}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--out",
                                 str(tmp_path / "run"), "--threads", "1", "-q"])  # fmt: skip
    assert r.exit_code == 0, (r.stderr, r.exception)
    assert (tmp_path / "run" / "checkpoints").is_dir()


@pytest.mark.parametrize(
    "factory, x, extra",
    [("dict_out", np.random.default_rng(3).normal(size=(20, 8)).astype(np.float32),
      {"output": "scores"}),
     ("tuple_in_place", np.random.default_rng(4).integers(0, 256, (20, 8)).astype(np.uint8), {}),
     ("tokens", np.random.default_rng(5).integers(0, 11, (20, 2)), {})],
    ids=["dict", "tuple-uint8", "tokens"],
)  # fmt: skip
def test_cached_and_sharded_reports_read_the_class_count_as_analyze_does(
    tmp_path, monkeypatch, factory, x, extra
):
    """The cache (on by default) re-derives C for the verdicts from a fresh model: through the
    same output picking and input handling as analyze, for dict/tuple outputs and tokens."""
    monkeypatch.delenv("ALIGNCTL_CACHE", raising=False)
    root = make_run(tmp_path / "r", factory, x, scales=(1.0, 0.5), model_extra=extra)
    fresh, want = run_cli(root, "--no-cache", "--json", "-")
    assert fresh.exit_code == 0, fresh.stderr
    for _ in range(2):  # measured, then every checkpoint from the cache
        r, got = run_cli(root, "--json", "-")
        assert r.exit_code == 0, r.stderr
        assert got["recommendation"] == want["recommendation"]
        assert [c["verdict"] for c in got["checkpoints"]] == [
            c["verdict"] for c in want["checkpoints"]
        ]
    assert got["cache"]["hits"] == 2


def test_a_tuple_of_several_batch_tensors_says_which_one_was_taken(tmp_path):
    """(logits, features) and (features, logits) look alike to the convention (the first
    tensor); taking features for logits would be silent wrong numbers, so the choice is a note
    in the report (and on stderr), and gone once ``--output`` chooses."""
    x = np.random.default_rng(4).integers(0, 256, size=(12, 8)).astype(np.uint8)
    root = make_run(tmp_path / "r", "tuple_in_place", x)
    r, report = run_cli(root, "--json", "-", "--metrics", "fast")
    assert r.exit_code == 0, r.stderr
    said = [n for n in report["notes"] if "taken as the logits" in n]
    assert len(said) == 1 and "[0] (n, 3), [1] (n, 8)" in said[0] and "--output" in said[0]
    assert "taken as the logits" in r.stderr
    r, report = run_cli(root, "--json", "-", "--metrics", "fast", "--output", "0")
    assert r.exit_code == 0 and not any("taken as the logits" in n for n in report["notes"])


@pytest.mark.parametrize(
    "out, noted",
    [
        (lambda z: (z, z[:, :2]), True),  # two (n, .) tensors
        (lambda z: [z, None, z], True),
        (lambda z: (z, torch.zeros(())), False),  # a scalar beside the logits (a loss)
        (lambda z: (z, z[:1]), False),  # not one row per sample
        (lambda z: (z,), False),
        (lambda z: {"logits": z, "f": z}, False),  # a named choice, not a convention
        (lambda z: z, False),
    ],
)
def test_ambiguous_outputs(out, noted):
    import alignctl.geometry.outputs as outputs

    note = outputs.ambiguous(out(torch.zeros(4, 3)))
    assert (note is not None) == noted
