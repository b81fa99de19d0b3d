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
    "baseline without a --max-drop gate": (
        lambda t: [str(make_run(t / "r")), "--baseline", str(_baseline(t, _BASE))],
        "--max-drop",
    ),
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


# ---- issue 16: values that allocate or recurse, numbers that are not numbers ----


def _cfg_run(t: Path, *, model=None, data=None, extra=None, text=None) -> list[str]:
    """argv for a valid run whose alignctl.yaml has ``model`` / ``data`` / more replaced."""
    if text is None:
        cfg = {"model": model or MODEL, "data": data or {"path": "data.npz"}, **(extra or {})}
        text = yaml.safe_dump(cfg)
    return [str(make_run(t / "r", config=text))]


def _cfg_bytes(t: Path, raw: bytes) -> list[str]:
    argv = _cfg_run(t)
    (Path(argv[0]) / "alignctl.yaml").write_bytes(raw)
    return argv


def _laughs(levels: int = 9, width: int = 9) -> str:
    """The billion-laughs document: each level lists the previous one ``width`` times."""
    lines = ["verdict:", '  l0: &l0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def _nested(depth: int) -> str:
    return "model: " + "[" * depth + "]" * depth + "\ndata: {path: data.npz}\n"


def _baseline(t: Path, content) -> Path:
    p = t / "base.json"
    p.write_text(content if isinstance(content, str) else __import__("json").dumps(content))
    return p


_BASE = {"checkpoints": [{"metrics": {"centroid_alignment": 0.5}, "test_accuracy": 1.0}]}
_DROP = ["--max-drop", "centroid_alignment=0.1"]

CASES.update({
    "task of 1e11 samples": (
        lambda t: _cfg_run(t, data={"task": "sparse-parity", "n": 10**11}), "budget"),
    "xor task of 1e11 elements": (
        lambda t: _cfg_run(t, model={**MODEL, "in_features": 10**7},
                           data={"task": "xor-cluster", "dim": 10**7, "n_train": 10**4}),
        "budget"),
    "hidden width 1e11": (lambda t: _cfg_run(t, model={**MODEL, "hidden": [10**11]}), "budget"),
    "hidden width 1e11 as a float": (
        lambda t: _cfg_run(t, model={**MODEL, "hidden": [1e11]}), "budget"),
    "transformer of 1e12 parameters": (
        lambda t: _cfg_run(t, model={"arch": "transformer", "d_model": 10**6, "d_mlp": 10**6}),
        "budget"),
    "negative input features": (
        lambda t: _cfg_run(t, model={**MODEL, "in_features": -4}), "mlp"),
    "zero hidden width": (lambda t: _cfg_run(t, model={**MODEL, "hidden": [0]}), "0"),
    "zero classes": (lambda t: _cfg_run(t, model={**MODEL, "out_features": 0}), "0"),
    "negative classes": (lambda t: _cfg_run(t, model={**MODEL, "out_features": -3}), "mlp"),
    "negative task size": (
        lambda t: _cfg_run(t, data={"task": "xor-cluster", "n_train": -5}), "xor-cluster"),
    "20,000 nested brackets": (lambda t: _cfg_run(t, text=_nested(20_000)), "nested"),
    "billion laughs": (lambda t: _cfg_run(t, text=_laughs()), "refused"),
    "aliases within the count, expansion over the limit": (
        lambda t: _cfg_run(t, text=_laughs(levels=5, width=12)), "expands"),
    "config over 1 MiB": (
        lambda t: _cfg_run(t, text="# pad\n" * 300_000 + "model: {arch: mlp}\n"), "1 MiB"),
    "config that is not UTF-8": (lambda t: _cfg_bytes(t, b"model: \xff\xfe\n"), "UTF-8"),
    "verdict threshold abc": (lambda t: _cfg_run(t, extra={"verdict": {"fit": "abc"}}), "fit"),
    "verdict threshold nan": (
        lambda t: _cfg_run(t, text=f"{yaml.safe_dump({'model': MODEL})}data: {{path: data.npz}}\n"
                           "verdict: {fit: .nan}\n"), "finite"),
    "verdict threshold inf": (
        lambda t: _cfg_run(t, text=f"{yaml.safe_dump({'model': MODEL})}data: {{path: data.npz}}\n"
                           "verdict: {erank: .inf}\n"), "finite"),
    "verdict threshold a list": (lambda t: _cfg_run(t, extra={"verdict": {"fit": [1]}}), "fit"),
    "verdict threshold a bool": (lambda t: _cfg_run(t, extra={"verdict": {"fit": True}}), "fit"),
    "unknown verdict threshold": (lambda t: _cfg_run(t, extra={"verdict": {"fitt": 1}}), "fitt"),
    "--fail-under x=nan": (
        lambda t: [str(make_run(t / "r")), "--fail-under", "centroid_alignment=nan"], "finite"),
    "--fail-over x=inf": (
        lambda t: [str(make_run(t / "r")), "--fail-over", "jacobian_erank=inf"], "finite"),
    "--max-drop x=nan": (
        lambda t: [str(make_run(t / "r")), "--baseline", str(_baseline(t, _BASE)),
                   "--max-drop", "centroid_alignment=nan"], "finite"),
    "--eps -1": (lambda t: [str(make_run(t / "r")), "--robustness", "--eps", "-1"], "--eps"),
    "--eps nan": (lambda t: [str(make_run(t / "r")), "--robustness", "--eps", "nan"], "--eps"),
    "--eps inf": (lambda t: [str(make_run(t / "r")), "--eps", "inf"], "--eps"),
    "--alpha 0": (lambda t: [str(make_run(t / "r")), "--robustness", "--alpha", "0"], "--alpha"),
    "--alpha nan": (lambda t: [str(make_run(t / "r")), "--alpha", "nan"], "--alpha"),
    "baseline metric 'high'": (
        lambda t: [str(make_run(t / "r")), "--baseline", str(_baseline(
            t, {"checkpoints": [{"metrics": {"centroid_alignment": "high"}}]})), *_DROP],
        "not a number"),
    "baseline that is a folder": (
        lambda t: [str(make_run(t / "r")), "--baseline", str(_mk(t / "base")), *_DROP], "base"),
    "baseline of a list": (
        lambda t: [str(make_run(t / "r")), "--baseline", str(_baseline(t, "[1, 2]")), *_DROP],
        "not an alignctl"),
    "baseline nested 100,000 deep": (
        lambda t: [str(make_run(t / "r")), "--baseline",
                   str(_baseline(t, "[" * 100_000 + "]" * 100_000)), *_DROP], "not an alignctl"),
    "baseline checkpoint not a mapping": (
        lambda t: [str(make_run(t / "r")), "--baseline",
                   str(_baseline(t, {"checkpoints": [1]})), *_DROP], "not an alignctl"),
    "test labels out of range": (
        lambda t: _data_run(t, x_train=np.zeros((4, 4), np.float32), y_train=np.arange(4) % 3,
                            x_test=np.zeros((2, 4), np.float32), y_test=np.array([1, 7])),
        "y_test: label 7"),
    "negative test labels": (
        lambda t: _data_run(t, x_train=np.zeros((4, 4), np.float32), y_train=np.arange(4) % 3,
                            x_test=np.zeros((2, 4), np.float32), y_test=np.array([-1, 0])),
        "y_test: label -1"),
    "control characters in a path": (lambda t: [str(t / "run\x1b[2J\x1b[31m")], "\\x1b[2J"),
    "control characters in a config key": (
        lambda t: _cfg_run(t, extra={"modle\x1b[2J\x07": 1}), "\\x1b[2J\\x07"),
})  # fmt: skip

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
    assert err.isprintable() and len(err) < 1100, "raw control characters or an unbounded line"
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


# ---- the budgets' estimates are exact: generated from the registries ----


def _count(module) -> int:
    return sum(t.numel() for t in [*module.parameters(), *module.buffers()])


def _with_defaults(fn, params: dict) -> dict:
    import inspect

    sig = inspect.signature(fn).parameters
    out = {k: p.default for k, p in sig.items() if p.default is not inspect.Parameter.empty}
    return {**out, **params}


def _model_variants(name: str) -> list[dict]:
    from alignctl.runs.models import MODELS

    fn = MODELS.get(name)
    base = dict(fn.test_params)
    variants = [base]
    if "bias" in __import__("inspect").signature(fn).parameters:
        variants.append({**base, "bias": False})
    if "hidden" in base:
        variants.append({**base, "hidden": [3, 2, 5]})
    if name == "cnn":
        variants.append({**base, "image_size": 5, "n_conv": 4})
    if name == "transformer":
        variants.append({**base, "out_features": 7, "n_ctx": 4})
    return variants


def _model_names() -> list[str]:
    from alignctl.runs.models import MODELS

    return MODELS.names()


@pytest.mark.parametrize("name", _model_names())
def test_every_model_counts_its_parameters_exactly(name):
    """The parameter budget is checked from ``n_parameters`` before building: it must be the
    number the built model holds (parameters and buffers), on several shapes."""
    from alignctl.runs.models import MODELS, build_model

    fn = MODELS.get(name)
    assert callable(getattr(fn, "n_parameters", None)), f"{name} has no n_parameters"
    for params in _model_variants(name):
        model = build_model({"arch": name, **params}, Path("."))
        assert fn.n_parameters(**_with_defaults(fn, params)) == _count(model), params


def _task_names() -> list[str]:
    from alignctl.runs.tasks import TASKS

    return [n for n in TASKS.names() if getattr(TASKS.get(n), "elements", None)]


@pytest.mark.parametrize("name", _task_names())
def test_task_element_estimates_are_exact(name):
    from alignctl.runs.tasks import TASKS

    fn = TASKS.get(name)
    ds = fn(**fn.test_params)
    held = sum(t.numel() for t in (ds.x_train, ds.y_train, ds.x_test, ds.y_test) if t is not None)
    assert fn.elements(**_with_defaults(fn, fn.test_params)) == held


def test_synthetic_tasks_have_estimates():
    """Tasks that generate their data (no file caps their size) must declare ``elements``."""
    assert {"sparse-parity", "xor-cluster", "modular-addition"} <= set(_task_names())


def test_hostile_yaml_is_refused_in_bounded_time_and_memory():
    """The loader alone, on the documents that hung or overflowed before: refused, and the
    billion laughs never expanded (peak Python allocation stays small)."""
    import time
    import tracemalloc

    from alignctl.errors import InputError
    from alignctl.runs.safe_yaml import load_text

    docs = {"laughs": _laughs(), "nested": _nested(20_000), "wide": _laughs(5, 12),
            "many aliases": "a: &a 1\nb: [" + ", ".join(["*a"] * 500) + "]\n",
            "deep mapping": "a: " + "{b: " * 5000 + "1" + "}" * 5000 + "\n"}  # fmt: skip
    for name, text in docs.items():
        tracemalloc.start()
        t0 = time.perf_counter()
        with pytest.raises(InputError, match="refused"):
            load_text(text, name)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 64 << 20, (name, peak)
        assert seconds < 30, (name, seconds)  # a hang guard, not a benchmark


def test_a_sparse_64_gib_config_is_not_read(tmp_path):
    """Only the first MiB of alignctl.yaml is read: a 64 GiB sparse file is refused at once."""
    argv = _cfg_run(tmp_path)
    cfg = Path(argv[0]) / "alignctl.yaml"
    with open(cfg, "r+b") as fh:
        fh.truncate(64 << 30)
    r = CliRunner().invoke(app, ["analyze", *argv, "--quiet"])
    assert r.exit_code == 2 and "1 MiB" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ---- regulariser parameters and schedules from the command line ----

TINY = {"model": MODEL, "data": {"path": "data.npz"}, "train": {"epochs": 1, "batch_size": 20}}


@pytest.mark.parametrize(
    ("reg", "fragment"),
    [("grokalign:lambda=nan", "finite"), ("grokalign:lambda=inf", "finite"),
     ("grokalign:n_proj=100000000000", "limit"), ("grokfast:window=1000000000", "limit"),
     ("adversarial:steps=1e400", "finite"), ("grokalign:lambda=-inf", "finite")],
)  # fmt: skip
def test_regulariser_values_that_are_not_numbers_or_allocate(tmp_path, reg, fragment):
    root = make_run(tmp_path / "r", config=TINY)
    args = ["train", "--config", str(root / "alignctl.yaml"), "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(app, [*args, "--reg", reg, "--quiet"])
    assert r.exit_code == 2, (r.stderr, r.exception)
    err = r.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "o").exists()


def test_a_huge_log_schedule_is_every_epoch_at_once():
    """log:K with K past E ln E + 2 is every epoch (the log-spaced points are under one epoch
    apart); same set as the formula, without iterating K times."""
    import math

    from alignctl.train.schedule import save_epochs

    def formula(e, k):
        pts = {round(math.exp(i * math.log(max(e, 1)) / max(k - 1, 1))) for i in range(k)}
        return {x for x in pts | {0, e} if 0 <= x <= e}

    for e in (1, 2, 3, 7, 50, 333):
        top = int(e * math.log(max(e, 1))) + 2
        for k in range(max(1, top - 3), top + 4):
            assert save_epochs(e, None, f"log:{k}") == formula(e, k), (e, k)
    assert save_epochs(1000, None, f"log:{10**12}") == set(range(1001))
