"""The analyze pipeline's speed-ups change no number (issue 17, item 6).

vjp_rows without a tensor ``grad_outputs`` (no sympy import), prediction without copying the
data for models that provably never write their input (:mod:`alignctl.geometry.readonly`),
the garbage collector paused and frozen around the CLI's imports: each against the path it
replaces, bit for bit, and the whole JSON report with and without them."""

import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from alignctl.evaluation.accuracy import predict
from alignctl.geometry import vjp
from alignctl.geometry.readonly import never_writes_input

ROOT = Path(__file__).resolve().parents[1]


def reference_vjp_rows(out, inp, cotangents):
    """What vjp_rows computed before: the cotangent as grad_outputs."""
    rows = []
    for i, v in enumerate(cotangents):
        (g,) = torch.autograd.grad(out, inp, v, retain_graph=i < len(cotangents) - 1)
        rows.append(g.reshape(g.shape[0], -1))
    return rows


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 7))  # fmt: skip


MODELS = {
    "mlp": (lambda: nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 5)), (9, 6)),
    "mlp-float64": (
        lambda: nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double(),
        (9, 6),
    ),
    "cnn": (_cnn, (5, 1, 8, 8)),
    "gelu-layernorm": (
        lambda: nn.Sequential(nn.Linear(6, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 11)),
        (13, 6),
    ),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_vjp_rows_bit_identical_to_grad_outputs(name):
    make, shape = MODELS[name]
    torch.manual_seed(0)
    model = make()
    dtype = next(model.parameters()).dtype
    inp = torch.randn(shape, dtype=dtype).requires_grad_(True)
    out = model(inp)
    eye = torch.eye(out.shape[1], dtype=out.dtype)
    labels = torch.nn.functional.one_hot(torch.arange(shape[0]) % out.shape[1], out.shape[1])
    cots = [e.expand_as(out) for e in eye] + [torch.ones_like(out), labels.to(out)]
    got = vjp.vjp_rows(out, inp, cots)
    want = reference_vjp_rows(model(inp), inp, cots)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_vjp_rows_refuses_a_cotangent_of_another_shape():
    inp = torch.randn(4, 3, requires_grad=True)
    out = inp @ torch.randn(3, 2)
    with pytest.raises(ValueError, match="shape"):
        vjp.vjp_rows(out, inp, [torch.ones(2)])  # would broadcast


class Scale(nn.Module):
    def forward(self, x):
        x /= 2  # writes its input
        return x


def _writes_in_place_hook(mod, args):
    args[0].mul_(3)


def _hooked():
    m = nn.Sequential(nn.Linear(4, 3))
    m.register_forward_pre_hook(_writes_in_place_hook)
    return m


class Sub(nn.Sequential):
    pass


WRITERS = {
    "relu-inplace-first": lambda: nn.Sequential(nn.ReLU(inplace=True), nn.Linear(4, 3)),
    "flatten-then-inplace": lambda: nn.Sequential(nn.Flatten(), nn.ReLU(inplace=True)),
    "dropout-inplace-first": lambda: nn.Sequential(nn.Dropout(0.5, inplace=True)),
    "nested": lambda: nn.Sequential(nn.Identity(), nn.Sequential(nn.LeakyReLU(inplace=True))),
    "custom-module": lambda: nn.Sequential(Scale(), nn.Linear(4, 3)),
    "hook": _hooked,
    "subclass": lambda: Sub(nn.Linear(4, 3)),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_models_that_may_write_their_input_are_not_proved_safe(name):
    model = WRITERS[name]()
    assert not never_writes_input(model)
    x = torch.randn(6, 4)
    kept = x.clone()
    predict(model, x, "cpu")
    assert torch.equal(x, kept)  # predict copied


def test_a_global_hook_makes_nothing_safe():
    model = nn.Sequential(nn.Linear(4, 3))
    assert never_writes_input(model)
    handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda m, a: None)
    try:
        assert not never_writes_input(model)
    finally:
        handle.remove()


LAYERS = [
    lambda: nn.Linear(4, 4), lambda: nn.ReLU(), lambda: nn.ReLU(inplace=True),
    lambda: nn.Tanh(), lambda: nn.GELU(), lambda: nn.Identity(), lambda: nn.Flatten(),
    lambda: nn.Dropout(0.3), lambda: nn.Dropout(0.3, inplace=True), lambda: nn.ELU(inplace=True),
    lambda: nn.Hardtanh(inplace=True), lambda: nn.LayerNorm(4), lambda: nn.BatchNorm1d(4),
    lambda: nn.SiLU(inplace=True), lambda: Scale(),
]  # fmt: skip


@st.composite
def sequentials(draw, depth=0):
    layers = []
    for _ in range(draw(st.integers(1, 4))):
        if depth < 2 and draw(st.integers(0, 4)) == 0:
            layers.append(draw(sequentials(depth=depth + 1)))
        else:
            layers.append(LAYERS[draw(st.integers(0, len(LAYERS) - 1))]())
    return nn.Sequential(*layers)


@settings(max_examples=150, deadline=None)
@given(model=sequentials(), train=st.booleans())
def test_proved_safe_models_leave_their_input_unchanged(model, train):
    """The proof is sound on every model it accepts: in train and eval mode, with and
    without gradients, the input's bits are unchanged."""
    x = torch.randn(5, 4)
    kept = x.clone()
    safe = never_writes_input(model)
    model.train(train)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            if safe:
                model(x)
                assert torch.equal(x, kept)
    got = predict(model, x, "cpu")
    assert torch.equal(x, kept)
    model.eval()
    with torch.no_grad():
        assert torch.equal(got, model(x.clone()))


def _run(root: Path, n_ckpt=3) -> Path:
    """benchmarks/analyze_pipeline.py's run in small (MLP without bias, teacher labels)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from analyze_pipeline import make_run

    root.mkdir()
    make_run(root, n_ckpt, n_in=20, n_train=100, n_test=160, hidden=(24, 24))
    return root


def _report(root: Path, **kw) -> dict:
    from alignctl.report import render
    from alignctl.report.analysis import analyze
    from alignctl.runs.run import open_run

    report = json.loads(render.to_json(analyze(open_run(root), threads=1, **kw)))
    for entry in report["checkpoints"]:
        entry.pop("seconds")
    return report


def _without_speed_ups(monkeypatch):
    """The paths as they were: grad_outputs, copies, and a train prediction every time."""
    measure_mod = importlib.import_module("alignctl.geometry.measure")
    monkeypatch.setattr(vjp, "vjp_rows", reference_vjp_rows)
    monkeypatch.setattr("alignctl.geometry.chunk.vjp_rows", reference_vjp_rows)
    monkeypatch.setattr("alignctl.geometry.readonly.never_writes_input", lambda m: False)
    plain = measure_mod.measure

    def no_logits(*args, outputs=None, **kwargs):
        return plain(*args, **kwargs)

    monkeypatch.setattr(measure_mod, "measure", no_logits)


def _count_predictions(monkeypatch) -> list[int]:
    import alignctl.evaluation.accuracy as acc

    rows, plain = [], acc.predict

    def counted(model, x, *args, **kwargs):
        rows.append(len(x))
        return plain(model, x, *args, **kwargs)

    monkeypatch.setattr(acc, "predict", counted)
    return rows


@pytest.mark.parametrize("metrics", ["standard", "fast", "full"])
def test_the_report_is_identical_without_the_speed_ups(tmp_path, monkeypatch, metrics):
    root = _run(tmp_path / "run")
    rows = _count_predictions(monkeypatch)
    fast = _report(root, metrics=metrics, robustness=True)
    assert rows.count(100) == 1  # the train split predicted once, then measure()'s logits
    _without_speed_ups(monkeypatch)
    assert _report(root, metrics=metrics, robustness=True) == fast
    assert rows.count(100) == 1 + 3


def test_outputs_that_overflow_after_the_check_still_make_the_checkpoint_diverged(
    tmp_path, monkeypatch
):
    """Finite weights, logits beyond float32: diverged with the outputs' reason and no note
    of the measurement (which now runs first, and re-measures in float64)."""
    from alignctl.runs.checkpoints import write_checkpoint
    from alignctl.runs.run import open_run

    root = _run(tmp_path / "run")
    run = open_run(root)
    model = run.build_model()
    run.load_checkpoint(model, run.checkpoints[-1])
    state = {k: v * 1e16 for k, v in model.state_dict().items()}
    write_checkpoint(root / "checkpoints" / "step_00000009.safetensors", state, {"step": 9})
    fast = _report(root)
    assert fast["checkpoints"][-1]["reason"].startswith("the outputs are not finite")
    _without_speed_ups(monkeypatch)
    assert _report(root) == fast


PROTOCOL = '''
import torch
from torch import nn


class Net(nn.Module):
    """forward is not forward_embedded(embed(x)) to the bit: no reuse of measure's logits."""

    def __init__(self):
        super().__init__()
        self.emb, self.head = nn.Embedding(7, 5), nn.Linear(15, 3)

    def embed(self, tokens):
        return self.emb(tokens)

    def forward_embedded(self, e):
        return self.head(e.flatten(1))

    def forward(self, tokens):
        return self.head(self.emb(tokens).flatten(1) * (1 + 2**-20))


def make():
    return Net()
'''


def test_logits_that_differ_from_predict_are_not_reused(tmp_path, monkeypatch):
    from alignctl.runs.checkpoints import write_checkpoint

    root = tmp_path / "run"
    root.mkdir()
    (root / "net.py").write_text(PROTOCOL)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 7, (50, 3), generator=g)
    y = x.sum(1) % 3
    np.savez(root / "data.npz", x_train=x[:30].numpy(), y_train=y[:30].numpy(),
             x_test=x[30:].numpy(), y_test=y[30:].numpy())  # fmt: skip
    (root / "alignctl.yaml").write_text("model: {factory: 'net.py:make'}\ndata: {path: data.npz}\n")
    spec = importlib.util.spec_from_file_location("protocol_net", root / "net.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for step in range(3):
        torch.manual_seed(step)
        write_checkpoint(root / "checkpoints" / f"step_{step}.safetensors",
                         mod.make().state_dict(), {"step": step})  # fmt: skip
    rows = _count_predictions(monkeypatch)
    fast = _report(root)
    assert rows.count(30) == 3  # checked on the first, predicted on every checkpoint
    _without_speed_ups(monkeypatch)
    assert _report(root) == fast


def test_heavy_imports_restore_the_collector_and_freeze_only_in_the_console_script():
    import gc

    from alignctl.cli.common import FREEZE_IMPORTS, heavy_imports

    assert not FREEZE_IMPORTS["on"]  # CliRunner and the library: never frozen
    frozen = gc.get_freeze_count()
    with heavy_imports():
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    gc.disable()
    try:
        with heavy_imports():
            pass
        assert not gc.isenabled()  # the caller's choice is kept
    finally:
        gc.enable()


def test_the_console_script_imports_no_sympy_and_freezes_its_imports(tmp_path):
    """One process as a user runs it: torch's import is frozen, and measure's
    vector-Jacobian products no longer import sympy (0.3-0.5 s of CPU)."""
    root = _run(tmp_path / "run", n_ckpt=1)
    script = (
        "import gc, sys\nfrom alignctl.cli import main\n"
        f"sys.argv = ['alignctl', 'analyze', {str(root)!r}, '--no-cache', '-q', '--json', '-']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('sympy' in sys.modules, gc.get_freeze_count() > 100000, file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["checkpoints"][0]["train_accuracy"] is not None
    assert proc.stderr.strip().splitlines()[-1] == "False True"


SPECIAL = [float("nan"), float("inf"), -float("inf"), 3e38, -3e38, 65504.0, 1e-45, 0.0, -0.0]


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 300),
    dtype=st.sampled_from(
        [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64]
    ),  # fmt: skip
    specials=st.lists(st.tuples(st.integers(0, 299), st.sampled_from(SPECIAL)), max_size=4),
    scale=st.sampled_from([1.0, 1e4, 1e30]),
)
def test_all_finite_is_the_elementwise_test(n, dtype, specials, scale):
    from alignctl.geometry.finite import all_finite

    x = torch.randn(n, dtype=torch.float64) * scale
    for i, v in specials:
        if i < n:
            x[i] = v
    x = x.to(dtype)
    assert all_finite(x) == bool(torch.isfinite(x).all())
    if n:
        assert all_finite(x.reshape(1, n, 1)) == all_finite(x)


def test_all_finite_on_integers_and_empty_tensors():
    from alignctl.geometry.finite import all_finite

    assert all_finite(torch.arange(5)) and all_finite(torch.empty(0))
    assert all_finite(torch.full((3,), 3e38).float())  # the sum overflows; no element does
