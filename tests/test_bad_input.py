"""The catalogue of bad input: every case exits 2 with a one-line message on stderr, no
traceback, its files unchanged, and no pickled code executed."""

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from alignctl.cli.assemble import app

MODEL = {"arch": "mlp", "in_features": 4, "hidden": [8], "out_features": 3}
MARKER = "alignctl_pwned_marker"


def _model():
    from alignctl.runs.models import build_model

    torch.manual_seed(0)
    return build_model(MODEL, Path("."))


def make_run(root: Path, *, config=None, data=None, ckpts=None) -> Path:
    """A valid run (config, data.npz, two safetensors checkpoints) unless a part is given."""
    root.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    if data is None:
        x = g.normal(size=(20, 4)).astype(np.float32)
        data = {
            "x_train": x,
            "y_train": g.integers(0, 3, 20),
            "x_test": x[:5],
            "y_test": np.arange(5) % 3,
        }
    if data is not False:
        np.savez(root / "data.npz", **data)
    cfg = config if config is not None else {"model": MODEL, "data": {"path": "data.npz"}}
    (root / "alignctl.yaml").write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    (root / "checkpoints").mkdir(exist_ok=True)
    if ckpts is None:
        sd = _model().state_dict()
        for step in (0, 10):
            save_file(
                {k: v.contiguous() for k, v in sd.items()},
                str(root / "checkpoints" / f"step_{step}.safetensors"),
            )
    else:
        for name, content in ckpts.items():
            p = root / "checkpoints" / name
            if isinstance(content, bytes):
                p.write_bytes(content)
            elif isinstance(content, dict):
                torch.save(content, p) if name.endswith((".pt", ".pth")) else save_file(
                    content, str(p)
                )
    return root


class Evil:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {MARKER}",))


def _sd(**changes):
    sd = {k: v.clone() for k, v in _model().state_dict().items()}
    for k, v in changes.items():
        if v is None:
            sd.pop(k)
        else:
            sd[k] = v
    return sd


def _valid_bytes():
    import io

    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in _model().state_dict().items()}) if io else b""


# name -> (builder(tmp) -> argv, expected message fragment)
CASES = {
    "missing path": (lambda t: [str(t / "nope")], "does not exist"),
    "empty folder": (lambda t: [str(_mk(t / "empty"))], "empty"),
    "no checkpoint files": (lambda t: [str(_notes(t))], "no checkpoint"),
    "zero-byte safetensors": (
        lambda t: [str(make_run(t / "r", ckpts={"step_1.safetensors": b""}))],
        "step_1",
    ),
    "truncated safetensors": (
        lambda t: [str(make_run(t / "r", ckpts={"step_1.safetensors": _valid_bytes()[:60]}))],
        "step_1",
    ),
    "garbage safetensors": (
        lambda t: [str(make_run(t / "r", ckpts={"step_1.safetensors": b"\x07garbage" * 40}))],
        "step_1",
    ),
    "pickle that runs code": (
        lambda t: [str(make_run(t / "r", ckpts={"step_1.pt": pickle.dumps(Evil())}))],
        "step_1",
    ),
    "missing keys": (
        lambda t: [str(make_run(t / "r", ckpts={"step_1.safetensors": _sd(**{"3.bias": None})}))],
        "missing",
    ),
    "unexpected keys": (
        lambda t: [str(make_run(t / "r", ckpts={"step_1.safetensors": _sd(extra=torch.zeros(2))}))],
        "unexpected",
    ),
    "shape mismatch": (
        lambda t: [
            str(
                make_run(
                    t / "r", ckpts={"step_1.safetensors": _sd(**{"1.weight": torch.zeros(9, 4)})}
                )
            )
        ],
        "shape",
    ),
    "checkpoint of another model": (
        lambda t: [
            str(make_run(t / "r", ckpts={"step_1.pt": {"conv.weight": torch.zeros(3, 3, 3, 3)}}))
        ],
        "does not fit",
    ),
    "invalid yaml": (
        lambda t: [str(make_run(t / "r", config="model: [unclosed\n  - x: :"))],
        "alignctl.yaml",
    ),
    "unknown architecture": (
        lambda t: [
            str(
                make_run(
                    t / "r", config={"model": {"arch": "resnet9000"}, "data": {"path": "data.npz"}}
                )
            )
        ],
        "mlp",
    ),
    "unknown task": (
        lambda t: [str(make_run(t / "r", config={"model": MODEL, "data": {"task": "imagenet"}}))],
        "sparse-parity",
    ),
    "unknown config key": (
        lambda t: [
            str(
                make_run(t / "r", config={"model": MODEL, "data": {"path": "data.npz"}, "modle": 1})
            )
        ],
        "valid",
    ),
    "factory file missing": (
        lambda t: [
            str(
                make_run(
                    t / "r",
                    config={"model": {"factory": "nope.py:make"}, "data": {"path": "data.npz"}},
                )
            )
        ],
        "nope.py",
    ),
    "factory raises": (lambda t: [str(_raising_factory(t))], "width must be even"),
    "data without labels": (
        lambda t: _data_run(t, x_train=np.zeros((4, 4), np.float32)),
        "y_train",
    ),
    "x/y length mismatch": (
        lambda t: _data_run(t, x_train=np.zeros((4, 4), np.float32), y_train=np.zeros(3, np.int64)),
        "4",
    ),
    "input size does not fit": (
        lambda t: _data_run(t, x_train=np.zeros((4, 7), np.float32), y_train=np.zeros(4, np.int64)),
        "model",
    ),
    "labels out of range": (
        lambda t: _data_run(
            t, x_train=np.zeros((4, 4), np.float32), y_train=np.array([0, 1, 2, 7])
        ),
        "7",
    ),
    "object array in npz": (
        lambda t: _data_run(
            t, x_train=np.array([[1], "a"], dtype=object), y_train=np.zeros(2, np.int64)
        ),
        "object",
    ),
    "unknown metric": (lambda t: [str(make_run(t / "r")), "--metrics", "nope"], "nope"),
    "unknown split": (lambda t: [str(make_run(t / "r")), "--split", "valid"], "split"),
    "test split missing": (
        lambda t: [
            str(
                make_run(
                    t / "r",
                    data={
                        "x_train": np.zeros((4, 4), np.float32),
                        "y_train": np.zeros(4, np.int64),
                    },
                )
            ),
            "--split",
            "test",
        ],
        "test",
    ),
    "robustness without a test split": (
        lambda t: [
            *_data_run(t, x_train=np.zeros((4, 4), np.float32), y_train=np.zeros(4, np.int64)),
            "--robustness",
        ],
        "test split",
    ),
    "bad gate syntax": (
        lambda t: [str(make_run(t / "r")), "--fail-under", "centroid_alignment"],
        "METRIC=VALUE",
    ),
    "unknown gate metric": (lambda t: [str(make_run(t / "r")), "--fail-under", "nope=1"], "nope"),
    "baseline missing": (
        lambda t: [
            str(make_run(t / "r")),
            "--baseline",
            str(t / "none.json"),
            "--max-drop",
            "centroid_alignment=0.1",
        ],
        "none.json",
    ),
    "no config": (lambda t: [str(_bare_ckpt(t))], "alignctl.yaml"),
}
if not torch.cuda.is_available():
    CASES["--device cuda without CUDA"] = (
        lambda t: [str(make_run(t / "r")), "--device", "cuda"],
        "CUDA",
    )


def _data_run(t: Path, **arrays) -> list[str]:
    """argv for a run whose data.npz holds ``arrays``."""
    return [str(make_run(t / "r", data=arrays))]


def _mk(p: Path) -> Path:
    p.mkdir(parents=True)
    return p


def _notes(t: Path) -> Path:
    p = _mk(t / "notes")
    (p / "README.txt").write_text("no weights here")
    return p


def _raising_factory(t: Path) -> Path:
    root = make_run(
        t / "r",
        config={
            "model": {"factory": "net.py:make", "kwargs": {"width": 3}},
            "data": {"path": "data.npz"},
        },
    )
    (root / "net.py").write_text("def make(width):\n    raise ValueError('width must be even')\n")
    return root


def _bare_ckpt(t: Path) -> Path:
    p = _mk(t / "bare")
    save_file(
        {k: v.contiguous() for k, v in _model().state_dict().items()}, str(p / "step_1.safetensors")
    )
    return p / "step_1.safetensors"


def _snapshot(root: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build, fragment = CASES[case]
    argv = build(tmp_path)
    before = _snapshot(tmp_path)
    r = CliRunner().invoke(app, ["analyze", *argv, "--quiet"])
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr, r.exception)
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert fragment.lower() in err.lower(), err
    assert _snapshot(tmp_path) == before, "an input file changed"
    assert not (tmp_path / MARKER).exists() and not Path(MARKER).exists(), "pickled code ran"


def test_non_finite_weights_are_reported_as_diverged(tmp_path):
    sd = _sd(**{"1.weight": torch.full((8, 4), float("nan"))})
    root = make_run(tmp_path / "r")
    save_file(
        {k: v.contiguous() for k, v in sd.items()},
        str(root / "checkpoints" / "step_20.safetensors"),
    )
    r = CliRunner().invoke(app, ["analyze", str(root), "--json", "-"])
    assert r.exit_code == 0, r.stderr
    import json

    report = json.loads(r.stdout)
    assert [c["verdict"] == "diverged" for c in report["checkpoints"]] == [False, False, True]
    assert report["recommendation"]["action"] == "investigate"
