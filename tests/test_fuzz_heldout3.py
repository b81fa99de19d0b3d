"""Held-out fuzzing, third pass (issue 16's promise; issue 10's public API).

Integers beyond the float range. YAML, JSON and the ``NAME:key=value`` spec syntax read any
integer Python can hold (``10**400``), and every check that compared or formatted it as a
number (``math.isfinite``, ``float()``, ``{n:.3g}``) raised OverflowError: `error: internal
error` from ``train``/``race``/``analyze --baseline``/``compare`` and an OverflowError from the
API. Past 4,300 digits even ``int()`` and ``repr`` raise ValueError. Such an integer is now
refused where it is read (a config key named, a JSON file's line and column).

The rest of the public API (``alignctl.__all__``) with arguments of every wrong kind
(Hypothesis): ``Trainer.fit``, ``open_run``, ``build_config``, ``build_regulariser``,
``device=``, switches (``robustness``, ``overwrite``, ...) and the ``register_*`` decorators
raise one InputError naming the argument, before anything is written or registered.
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


# ---- the public API's other entry points with arguments of a wrong kind -----------------
#
# Before: TypeError / AttributeError / ValueError from inside (``Trainer.fit(1.5)``,
# ``open_run(model=3)``, ``build_regulariser(["grokalign"])``, ``device=3``), or worse, a
# wrong value read by its truth: ``Monitor(overwrite="no")`` replaced an earlier run,
# ``build_config(regs="grokalign")`` trained nine regularisers 'g', 'r', 'o', ...,
# ``register_task(None)`` broke every later "valid: ..." listing (sorting None with str).

WRONG = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True),
    st.text(max_size=5), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.just(object()), st.just(torch.tensor(1.5)), st.just(b"x"),
)  # fmt: skip


def _small_config():
    cfg = {"model": {"arch": "mlp", "in_features": 6, "hidden": [4], "out_features": 2},
           "data": {"task": "sparse-parity", "n": 16, "n_bits": 6, "k": 2}}  # fmt: skip
    from alignctl.runs.config import config_from_dict

    return config_from_dict(cfg, ".")


FIT = {  # argument -> predicate of the values it accepts
    "epochs": lambda v: type(v) is int and v >= 0,
    "eval_every": lambda v: v is None or (type(v) is int and v >= 1),  # None: the config's
    "save_every": lambda v: v is None or (type(v) is int and v >= 1),
    "stop_when_grokked": lambda v: v is None or type(v) is bool,  # None: the config's
    "callback": lambda v: v is None or callable(v),
    "should_stop": callable,
    "on_nan": lambda v: v is None or v in ("stop", "continue"),
}


@FAST
@given(arg=st.sampled_from(sorted(FIT)), value=WRONG)
def test_trainer_fit_refuses_a_wrong_argument_before_the_run_starts(tmp_path_factory, arg, value):
    if FIT[arg](value):
        return
    run_dir = tmp_path_factory.mktemp("fit") / "run"
    trainer = alignctl.Trainer(run_dir, _small_config(), device="cpu")
    kwargs = {"epochs": 1, arg: value}
    with pytest.raises(InputError, match=arg):
        trainer.fit(**kwargs)
    assert not (run_dir / "checkpoints").exists() or not any((run_dir / "checkpoints").iterdir())


def test_trainer_fit_reads_integers_of_numpy_and_torch_as_ints(tmp_path):
    import numpy as np

    trainer = alignctl.Trainer(tmp_path / "run", _small_config(), device="cpu")
    summary = trainer.fit(torch.tensor(2), eval_every=np.int64(1), save_every=np.int32(1))
    assert summary["epochs"] == 2 and type(summary["epochs"]) is int
    json.dumps(summary)  # before: "Object of type Tensor is not JSON serializable"


@FAST
@given(which=st.sampled_from(["model", "data", "weights", "state_key"]), value=WRONG)
def test_open_run_refuses_a_name_that_is_not_a_string(report, which, value):
    root, _ = report
    if value is None or isinstance(value, str):
        return
    with pytest.raises(InputError, match=which):
        alignctl.open_run(root, **{which: value})


@FAST
@given(value=WRONG)
def test_devices_are_names_or_torch_devices(value):
    from alignctl.geometry.devices import resolve_device

    if value is None or isinstance(value, str):
        return
    with pytest.raises(InputError, match="device"):
        resolve_device(value)
    with pytest.raises(InputError, match="device"):
        alignctl.measure(torch.nn.Linear(3, 2), torch.randn(4, 3), device=value)


@FAST
@given(switch=st.sampled_from(["robustness", "keep_samples", "tensorboard", "save_checkpoints",
                               "overwrite"]), value=WRONG)  # fmt: skip
def test_switches_are_bools_not_truthy_values(report, tmp_path_factory, switch, value):
    if isinstance(value, bool):
        return
    root, _ = report
    out = tmp_path_factory.mktemp("mon") / "m"
    with pytest.raises(InputError, match=switch):
        if switch in ("robustness", "keep_samples"):
            alignctl.analyze(alignctl.open_run(root), metrics="fast", **{switch: value})
        else:
            alignctl.Monitor(torch.nn.Linear(3, 2), torch.randn(4, 3), out=out, **{switch: value})
    assert not out.exists()


def test_overwrite_no_keeps_the_earlier_monitor_run(tmp_path):
    model, x = torch.nn.Linear(3, 2), torch.randn(4, 3)
    with alignctl.Monitor(model, x, out=tmp_path / "m", every=1) as mon:
        mon.step(0)
    before = (tmp_path / "m" / "alignment.jsonl").read_bytes()
    with pytest.raises(InputError, match="overwrite"):
        alignctl.Monitor(model, x, out=tmp_path / "m", overwrite="no")
    assert (tmp_path / "m" / "alignment.jsonl").read_bytes() == before


@FAST
@given(task=WRONG, regs=WRONG, overrides=WRONG)
def test_build_config_arguments_of_a_wrong_kind(task, regs, overrides):
    ok = (isinstance(task, str) and isinstance(regs, list) and all(isinstance(r, str) for r in regs)
          and (overrides is None or isinstance(overrides, dict)))  # fmt: skip
    try:
        alignctl.build_config(None, task, regs, 0, 1, overrides=overrides)
    except InputError:
        return
    assert ok, (task, regs, overrides)


def test_build_config_regs_as_one_string_is_refused():
    with pytest.raises(InputError, match="regs must be a list"):
        alignctl.build_config(None, "sparse-parity", "grokalign", 0, 1)


@FAST
@given(spec=WRONG, defaults=WRONG)
def test_build_regulariser_arguments_of_a_wrong_kind(spec, defaults):
    try:
        alignctl.build_regulariser(spec, defaults)
    except InputError:
        return
    assert isinstance(spec, str | dict) and (defaults is None or isinstance(defaults, dict))


@FAST
@given(
    name=st.one_of(WRONG, st.sampled_from(["", " ", "a b", "x\n", "a,b", "a:b", "k=v", "é\x1b"]))
)
def test_registry_names_are_plain_strings(name):
    """Nothing is registered: a refused name raises before the decorator runs."""
    plain = isinstance(name, str) and name.isprintable() and name.strip() == name and name
    for register in (alignctl.register_task, alignctl.register_model, alignctl.register_loss,
                     alignctl.register_regulariser):  # fmt: skip
        if plain and not any(c in ",:;= " for c in name):
            continue
        with pytest.raises(InputError, match="name"):
            register(name)
    sorted(alignctl.TASKS)  # the listings still sort


@pytest.mark.parametrize("kwargs", [
    {"needs": "everything"}, {"needs": 3}, {"labels": "no"}, {"opt_in": 1},
    {"bounds": (float("nan"), 1.0)}, {"bounds": (1, 0)}, {"bounds": "ab"}, {"bounds": (0,)},
    {"bounds": ("0", 1)},
])  # fmt: skip
def test_register_metric_refuses_wrong_arguments_before_registering(kwargs):
    before = len(alignctl.METRICS)
    with pytest.raises(InputError):
        alignctl.register_metric("heldout3_metric", **{"needs": "centroid", **kwargs})
    assert len(alignctl.METRICS) == before and "heldout3_metric" not in alignctl.METRICS


def test_registering_a_taken_name_is_an_input_error():
    with pytest.raises(InputError, match="registered twice"):
        alignctl.register_model("mlp")(lambda **kw: None)


@pytest.mark.parametrize("steps", [10_001, 10**400], ids=["10001", "1e400"])
def test_pgd_steps_beyond_the_cap_are_refused_before_any_work(tmp_path, steps):
    """`analyze(steps=10**400, robustness=True)` and a huge --pgd-steps ran without end."""
    from pathlib import Path

    from alignctl import analyze, open_run

    example = Path(__file__).resolve().parents[1] / "examples/checkpoints/sparse-parity-grokalign"
    with pytest.raises(InputError, match="at most 10,000"):
        analyze(open_run(example), robustness=True, steps=steps)
    r = CliRunner().invoke(app, ["analyze", str(example), "--robustness", "--pgd-steps",
                                 str(steps)])  # fmt: skip
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "at most 10,000" in r.stderr
