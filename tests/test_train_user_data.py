"""`alignctl train` on the user's own data and models: what a run accepts must be what
`alignctl analyze` reads back, and everything else is one `error:` line before any write."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from alignctl import Trainer
from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.runs.config import config_from_dict

X = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")


def _config(folder: Path, y_train, y_test, n_out: int, loss: str) -> dict:
    arrays = {"x_train": X[: len(y_train)], "y_train": np.asarray(y_train, "int64")}
    if y_test is not None:
        arrays.update(x_test=X[: len(y_test)], y_test=np.asarray(y_test, "int64"))
    np.savez(folder / "d.npz", **arrays)
    return {
        "model": {"arch": "mlp", "in_features": 4, "hidden": [3], "out_features": n_out},
        "data": {"path": "d.npz"},
        "train": {"epochs": 1, "loss": loss},
    }


def _valid(y, n_out: int) -> bool:
    """The oracle: labels a model with n_out outputs can predict."""
    return all(v in (-1, 0, 1) for v in y) if n_out == 1 else all(0 <= v < n_out for v in y)


labels = st.lists(st.integers(-3, 5), min_size=2, max_size=6)


@settings(max_examples=60, deadline=None)
@given(y_train=labels, y_test=st.none() | labels, n_out=st.integers(1, 4),
       loss=st.sampled_from(["cross_entropy", "mse", "logistic", "stablemax"]))  # fmt: skip
def test_a_run_accepts_exactly_the_labels_its_model_can_output(y_train, y_test, n_out, loss):
    """Train and test labels are both checked against the model's outputs (a test label out of
    range once trained to the end, and analyze then refused the run); a loss that does not fit
    the outputs (logistic on C >= 2 once crashed with a broadcasting RuntimeError) too."""
    fits_loss = (n_out == 1) == (loss == "logistic") or (n_out == 1 and loss == "mse")
    ok = _valid(y_train, n_out) and _valid(y_test or [], n_out) and fits_loss
    with tempfile.TemporaryDirectory() as d:
        cfg = config_from_dict(_config(Path(d), y_train, y_test, n_out, loss), Path(d))
        if ok:
            Trainer(Path(d) / "run", cfg, device="cpu")
        else:
            with pytest.raises(InputError):
                Trainer(Path(d) / "run", cfg, device="cpu")


@pytest.mark.parametrize(
    ("y_test", "n_out", "loss", "fragment"),
    [
        ([0, 1, 5], 2, "cross_entropy", "y_test: label 5 is out of range"),
        ([0, 1, 1], 2, "logistic", "loss logistic needs a scalar output"),
        ([0, 2, 3], 1, "mse", "y_test: label 2 is not binary"),
    ],
)
def test_the_cli_refuses_labels_or_losses_that_do_not_fit_in_one_line(
    tmp_path, y_test, n_out, loss, fragment
):
    import yaml

    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump(_config(tmp_path, [0, 1, 0], y_test, n_out, loss))
    )
    r = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.yaml"),
                                 "--out", str(tmp_path / "run"), "-q"])  # fmt: skip
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and fragment in r.stderr
    assert not (tmp_path / "run").exists()


# (regulariser, parameter, the oracle: whether a value is in the parameter's documented range)
RANGES = [
    ("grokalign", "lambda", lambda v: v >= 0),
    ("grokunalign", "lambda", lambda v: v >= 0),
    ("grokalign", "eps", lambda v: v > 0),
    ("grokfast", "alpha", lambda v: 0 <= v <= 1),
    ("grokfast", "lamb", lambda v: True),
    ("adversarial", "eps", lambda v: v >= 0),
    ("adversarial", "alpha", lambda v: v >= 0),
    ("adversarial", "steps", lambda v: float(v).is_integer() and v >= 0),
    ("grokfast", "window", lambda v: float(v).is_integer() and v >= 1),
    ("grokalign", "every", lambda v: float(v).is_integer() and v >= 1),
]


@settings(max_examples=200, deadline=None)
@given(
    which=st.sampled_from(RANGES),
    value=st.integers(-5, 5) | st.floats(-3, 3, allow_nan=False) | st.sampled_from([0.0, 1.0]),
    as_text=st.booleans(),
)
def test_a_regulariser_accepts_exactly_its_parameters_range(which, value, as_text):
    """lambda -1, eps 0, Grokfast alpha 2, PGD eps -1 or steps 2.5 once trained (a penalty
    rewarding a large Jacobian, an infinite gradient at J = 0, an EMA growing 2^t, an attack
    descending the loss, steps silently rounded down); each is now one InputError, and every
    value in range still builds."""
    from alignctl.train.regularisers import build_regulariser

    name, param, ok = which
    spec = f"{name}:{param}={value}" if as_text else {"name": name, param: value}
    if ok(value):
        build_regulariser(spec)
    else:
        with pytest.raises(InputError, match=param):
            build_regulariser(spec)


NETS = """
import torch
def make(dtype="float32"):
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, 3)).to(getattr(torch, dtype))
"""


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_half_precision_model_trains_and_is_analysed_in_float32(tmp_path, dtype):
    """A bfloat16/float16 factory model trained (SGD: Adam's eps 1e-8 is 0 in float16) and
    then analysed: analyze once refused the run ("geqrf_cpu not implemented for 'BFloat16'",
    worded as the model not fitting the data); it now measures a float32 copy, and its metrics
    equal those of the same weights upcast by hand."""
    import json

    import torch
    import yaml

    from alignctl.geometry.measure import measure

    (tmp_path / "nets.py").write_text(NETS)
    np.savez(tmp_path / "d.npz", x_train=X, y_train=np.arange(6) % 3)
    cfg = {"model": {"factory": "nets.py:make", "kwargs": {"dtype": dtype}},
           "data": {"path": "d.npz"},
           "train": {"epochs": 2, "optimizer": {"name": "sgd", "lr": 0.1}}}  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    r = CliRunner().invoke(
        app, ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(run), "-q"]
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        app, ["analyze", str(run), "--json", "-", "--no-cache", "--metrics", "full"]
    )
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    last, names = report["checkpoints"][-1], report["metric_names"]
    trainer = Trainer(tmp_path / "twin", config_from_dict(cfg, tmp_path), device="cpu")
    from safetensors.torch import load_file

    ckpt = sorted((run / "checkpoints").glob("step_*.safetensors"))[-1]
    trainer.model.load_state_dict(load_file(str(ckpt)))
    want = measure(trainer.model.float(), torch.from_numpy(X), torch.arange(6) % 3, metrics=names)
    for name, values in want.items():
        assert last["metrics"][name] == pytest.approx(
            float(values.double().mean()), rel=1e-5, abs=1e-6
        ), name
