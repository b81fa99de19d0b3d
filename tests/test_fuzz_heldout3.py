"""Held-out fuzzing, third pass (issue 16's promise; issue 10's public API).

Integers beyond the float range. YAML, JSON and the ``NAME:key=value`` spec syntax read any
integer Python can hold (``10**400``), and every check that compared or formatted it as a
number (``math.isfinite``, ``float()``, ``{n:.3g}``) raised OverflowError: `error: internal
error` from ``train``/``race``/``analyze --baseline``/``compare`` and an OverflowError from the
API. Past 4,300 digits even ``int()`` and ``repr`` raise ValueError. Such an integer is now
refused where it is read (a config key named, a JSON file's line and column).
"""

import json
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import alignctl
from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.runs.validate import count_text, is_finite_real, short

SLOW_OK = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
FAST = settings(max_examples=25, deadline=None, suppress_health_check=SLOW_OK)

MODEL = "{arch: mlp, in_features: 10, hidden: [8], out_features: 2}"
DATA = "{task: sparse-parity, n: 64, n_bits: 10, k: 2, train_fraction: 0.5, seed: 0}"


def _one_line_exit_2(r) -> str:
    assert r.exit_code == 2, (r.exit_code, r.stderr, r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "internal error" not in lines[0] and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def _digits(n: int) -> str:
    return "1" + "0" * n  # a YAML/JSON integer literal of n + 1 digits


# where a number goes in a config: (template with {H}, the key the error must name)
CONFIG_SLOTS = [
    (f"model: {{arch: mlp, in_features: 10, hidden: [{{H}}], out_features: 2}}\ndata: {DATA}",
     "model.hidden[0]"),
    (f"model: {{arch: mlp, in_features: {{H}}, hidden: [8], out_features: 2}}\ndata: {DATA}",
     "model.in_features"),
    (f"model: {MODEL}\ndata: {{task: sparse-parity, n: {{H}}, n_bits: 10, k: 2}}", "data.n"),
    (f"model: {MODEL}\ndata: {DATA}\ntrain: {{optimizer: {{name: sgd, lr: {{H}}}}}}",
     "train.optimizer.lr"),
    (f"model: {MODEL}\ndata: {DATA}\ntrain: {{optimizer: {{betas: [{{H}}, 0.9]}}}}",
     "train.optimizer.betas[0]"),
    (f"model: {MODEL}\ndata: {DATA}\ntrain: {{batch_size: {{H}}}}", "train.batch_size"),
    (f"model: {MODEL}\ndata: {DATA}\ntrain: {{epochs: {{H}}}}", "train.epochs"),
    (f"model: {MODEL}\ndata: {DATA}\ntrain: {{regularisers: [{{name: grokalign, lambda: {{H}}}}]}}",
     "train.regularisers[0].lambda"),
    (f"model: {MODEL}\ndata: {DATA}\ntrain: {{regularisers: [{{name: grokalign, n_proj: {{H}}}}]}}",
     "n_proj"),
    (f"model: {MODEL}\ndata: {DATA}\ntrain: {{regularisers: ['grokalign:n_proj={{H}}']}}",
     "n_proj"),
    (f"model: {MODEL}\ndata: {DATA}\nverdict: {{fit: {{H}}}}", "verdict.fit"),
    (f"model: {MODEL}\ndata: {DATA}\ngrokked: {{test_acc: {{H}}}}", "grokked.test_acc"),
]  # fmt: skip


@FAST
@given(slot=st.sampled_from(CONFIG_SLOTS), digits=st.integers(309, 4000),
       negative=st.booleans())  # fmt: skip
def test_a_config_integer_beyond_the_float_range_is_named(tmp_path, slot, digits, negative):
    """Before: `error: internal error: OverflowError: int too large to convert to float` (or
    an endless run for ``epochs``, or the whole value in the message)."""
    template, key = slot
    value = ("-" if negative and "hidden" not in key else "") + _digits(digits)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(template.replace("{H}", value) + "\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["train", "--config", str(cfg), "--out", str(out), "-q"])
    line = _one_line_exit_2(r)
    assert key in line and len(line) < 400, line
    assert not out.exists()


@pytest.mark.parametrize("literal", [_digits(5000), "0x" + "f" * 5000])
def test_a_yaml_integer_past_python_s_digit_limit(tmp_path, literal):
    """Past 4,300 decimal digits ``int()`` and ``repr`` raise ValueError (before: internal
    error from the YAML constructor, or from the message quoting the value)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {MODEL}\ndata: {DATA}\ntrain: {{epochs: {literal}}}\n")
    r = CliRunner().invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert "epochs" in _one_line_exit_2(r) or "line 3" in r.stderr


@pytest.mark.parametrize("param", ["lambda", "n_proj"])
def test_a_command_line_regulariser_value_beyond_the_float_range(tmp_path, param):
    big = _digits(400)
    spec = f"grokalign:{param}={big}"
    r = CliRunner().invoke(app, ["train", "--task", "sparse-parity", "--reg", spec,
                                 "--out", str(tmp_path / "o")])  # fmt: skip
    assert param in _one_line_exit_2(r)
    r = CliRunner().invoke(app, ["race", "--task", "sparse-parity", "--regs",
                                 f"none,grokalign:{param}={big}", "--seeds", "1",
                                 "--out", str(tmp_path / "race")])  # fmt: skip
    assert param in _one_line_exit_2(r)
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A real ``analyze --json`` report of a two-checkpoint run."""
    from alignctl.runs.checkpoints import write_checkpoint
    from alignctl.runs.models import build_model

    root = tmp_path_factory.mktemp("run")
    spec = {"arch": "mlp", "in_features": 4, "hidden": [8], "out_features": 3}
    (root / "alignctl.yaml").write_text(f"model: {json.dumps(spec)}\ndata: {{path: data.pt}}\n")
    g = torch.Generator().manual_seed(0)
    torch.save({"x_train": torch.randn(12, 4, generator=g),
                "y_train": torch.randint(0, 3, (12,), generator=g)}, root / "data.pt")  # fmt: skip
    (root / "checkpoints").mkdir()
    model = build_model(spec, root)
    for step in (0, 10):
        write_checkpoint(root / "checkpoints" / f"step_{step}.safetensors", model.state_dict(),
                         {"step": step})  # fmt: skip
    out = root.parent / "report.json"
    r = CliRunner().invoke(app, ["analyze", str(root), "--metrics", "fast", "--json", str(out),
                                 "-q", "--no-cache"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    return root, json.loads(out.read_text())


@FAST
@given(where=st.sampled_from(["step", "train_accuracy", "metric"]),
       digits=st.sampled_from([309, 400, 4299, 5000]), negative=st.booleans())  # fmt: skip
def test_a_report_integer_beyond_the_float_range(tmp_path, report, where, digits, negative):
    """A baseline report and a compared report are JSON that another tool may have written;
    before: internal error (OverflowError, or int()'s digit limit) in both commands."""
    root, rep = report
    last = json.loads(json.dumps(rep))
    entry = last["checkpoints"][-1]
    marker = 123456789
    if where == "metric":
        entry["metrics"][next(iter(entry["metrics"]))] = marker
    else:
        entry[where] = marker
    text = json.dumps(last).replace(str(marker), ("-" if negative else "") + _digits(digits))
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    before = bad.read_bytes()
    metric = next(iter(entry["metrics"]))
    gate = f"{metric}=0.1"
    r = CliRunner().invoke(app, ["analyze", str(root), "--metrics", "fast", "-q", "--no-cache",
                                 "--baseline", str(bad), "--max-drop", gate])  # fmt: skip
    assert "digits" in _one_line_exit_2(r)
    r = CliRunner().invoke(app, ["compare", str(bad), str(bad), "-q"])
    assert "digits" in _one_line_exit_2(r)
    assert bad.read_bytes() == before


BIG = 10**400


@pytest.mark.parametrize("call", [
    lambda: alignctl.build_regulariser({"name": "grokalign", "lambda": BIG}),
    lambda: alignctl.build_regulariser({"name": "grokalign", "n_proj": -BIG}),
    lambda: alignctl.build_regulariser({"name": "adversarial", "eps": BIG}),
    lambda: alignctl.build_regulariser(f"grokalign:lambda={BIG}"),
    lambda: alignctl.build_config(None, "sparse-parity", [], 0, 1, overrides={"epochs": BIG}),
    lambda: alignctl.build_config(None, "sparse-parity", [], 0, 1,
                                  overrides={"optimizer": {"name": "sgd", "lr": BIG}}),
])  # fmt: skip
def test_the_api_refuses_integers_beyond_the_float_range(call):
    """Before: OverflowError from ``math.isfinite`` / ``float()``."""
    with pytest.raises(InputError, match="finite|beyond the range"):
        call()


def test_helpers_on_integers_of_any_size():
    sys.set_int_max_str_digits(0)
    try:
        huge = 10**5000
    finally:
        sys.set_int_max_str_digits(4300)
    assert not is_finite_real(BIG) and not is_finite_real(-huge) and is_finite_real(10**300)
    assert not is_finite_real(True) and not is_finite_real("1")
    assert count_text(BIG * BIG) == "~1e800" and count_text(2**30) == "1.07e+09"
    assert short(huge) == "<an integer of about 5000 digits>" and len(short([huge] * 3)) < 120
