"""Held-out fuzzing of the Python API as a user calls it (issue 16's promise, on the library):
a wrong argument to ``alignctl.measure`` / ``alignctl.jacobian`` / ``alignctl.analyze`` /
``alignctl.Monitor`` is one InputError naming it (never a torch traceback from inside a
backward pass, never a number computed from something else: complex inputs cast to real,
labels beyond the samples ignored, ``samples=-1`` measuring all but one sample), and no call
changes the caller's model (mode, parameters, gradients, requires_grad, hooks), tensors or
random number generators.
"""

import copy
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import alignctl
from alignctl.errors import InputError
from alignctl.geometry.arguments import NotApplicable, layout_problem
from alignctl.report.verdict import thresholds

FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3))


X = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 1, 2, 0, 1, 2])


def _state(model: nn.Module) -> tuple:
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                for m in model.modules())  # fmt: skip
    return ([m.training for m in model.modules()],
            {k: v.detach().clone() for k, v in model.state_dict().items()},
            {n: p.requires_grad for n, p in model.named_parameters()},
            {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
            hooks, torch.get_rng_state())  # fmt: skip


def _same(a: tuple, b: tuple) -> bool:
    def eq(u, v):
        if isinstance(u, torch.Tensor):
            return isinstance(v, torch.Tensor) and torch.equal(u, v)
        if isinstance(u, dict):
            return u.keys() == v.keys() and all(eq(u[k], v[k]) for k in u)
        if isinstance(u, list):
            return len(u) == len(v) and all(eq(p, q) for p, q in zip(u, v, strict=True))
        return u == v

    return all(eq(u, v) for u, v in zip(a, b, strict=True))


# ---- one value of each wrong kind, per argument (the class, not one example) ----

BAD_X = {
    "complex": lambda: X.to(torch.complex64),  # cast to real before: the imaginary part lost
    "meta": lambda: torch.empty(6, 4, device="meta"),
    "sparse_coo": lambda: X.to_sparse(),
    "sparse_csr": lambda: X.to_sparse_csr(),
    "nested": lambda: torch.nested.nested_tensor([X[0], X[1]]),
    "0-d": lambda: torch.tensor(1.0),
    "empty": lambda: torch.empty(0, 4),
    "str": lambda: "x",
    "None": lambda: None,
    "mapping": lambda: {"input_ids": X},
    "wrong_features": lambda: torch.randn(6, 5),
    "no_batch_dim": lambda: X[0],
}
BAD_Y = {
    "too_many": lambda: torch.cat([Y, Y]),  # the extra labels were never read
    "too_few": lambda: Y[:3],
    "one_hot": lambda: nn.functional.one_hot(Y, 3),
    "complex": lambda: Y.to(torch.complex64),
    "meta": lambda: torch.empty(6, dtype=torch.long, device="meta"),
    "str": lambda: "abc",
    "fractional": lambda: Y + 0.5,
    "out_of_range": lambda: Y + 3,
}
BAD_OPTIONS = {
    "batch_size": [0, -1, 2.5, float("nan"), float("inf"), "4", True, "four"],
    "dtype": [torch.int32, torch.bool, torch.complex64, torch.float16, "float99"],
    "metrics": [3, {"jacobian_norm": 1}, "jacobian_nrom", "", ",,", [None]],
    "seed": ["a", float("nan"), 1.5],
    "max_memory": [0, -1, float("nan"), "lots", 1],
    "sketch": [-1, float("nan"), "a"],
    "notes": ["abc", {}],
    "errors": [[], "x"],
    "outputs": [{}, "x"],
    "device": ["tpu", "meta"],
}
BAD_MODELS = {
    "None": lambda: None,
    "function": lambda: lambda t: t[:, :3],
    "meta": lambda: _mlp().to("meta"),
    "complex": lambda: nn.Linear(4, 3).to(torch.complex64),
}


def _call(fn, model, x, y=None, **options):
    """fn(model, x, y, **options): a result or one InputError of one line, nothing changed."""
    xs = [
        t.clone() if isinstance(t, torch.Tensor) and layout_problem(t) is None else None
        for t in (x, y)
    ]
    before = None
    if isinstance(model, nn.Module) and not _is_meta(model):
        if not any(p.is_complex() for p in model.parameters()):
            model(X).sum().backward()  # gradients of the caller's own, which must stay
        before = _state(model)
    try:
        result = fn(model, x, y, **options) if y is not None else fn(model, x, **options)
    except InputError as e:
        assert str(e).strip() and "\n" not in str(e), repr(str(e))
        result = e
    if before is not None:
        assert _same(before, _state(model)), "the caller's model or RNG changed"
    for orig, kept in zip((x, y), xs, strict=True):
        if kept is not None:
            assert torch.equal(orig, kept), "the caller's tensor changed"
    return result


def _is_meta(model) -> bool:
    return any(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("kind", sorted(BAD_X))
@pytest.mark.parametrize("fn", [alignctl.measure, alignctl.jacobian], ids=["measure", "jacobian"])
def test_inputs_of_a_wrong_kind_are_one_input_error(fn, kind):
    result = _call(fn, _mlp(), BAD_X[kind]())
    assert isinstance(result, InputError), (kind, result)


@pytest.mark.parametrize("kind", sorted(BAD_Y))
def test_labels_of_a_wrong_kind_or_count_are_one_input_error(kind):
    result = _call(alignctl.measure, _mlp(), X.clone(), BAD_Y[kind]())
    assert isinstance(result, InputError), (kind, result)


@pytest.mark.parametrize("kind", sorted(BAD_MODELS))
def test_a_model_of_a_wrong_kind_is_one_input_error(kind):
    result = _call(alignctl.measure, BAD_MODELS[kind](), X.clone(), Y.clone())
    assert isinstance(result, InputError), (kind, result)


@pytest.mark.parametrize(("name", "value"), [(k, v) for k, vs in BAD_OPTIONS.items() for v in vs],
                         ids=lambda v: repr(v)[:20])  # fmt: skip
def test_every_wrong_option_is_one_input_error_before_any_work(name, value):
    result = _call(alignctl.measure, _mlp(), X.clone(), Y.clone(), **{name: value})
    assert isinstance(result, InputError), (name, value, result)


def test_a_model_that_cannot_take_x_is_named_with_its_own_reason():
    with pytest.raises(NotApplicable, match=r"x \(shape \(6, 5\), float32\): mat1 and mat2") as e:
        alignctl.measure(_mlp(), torch.randn(6, 5), metrics="fast", batch_size=2)
    assert isinstance(e.value.__cause__, RuntimeError)  # the model's traceback is kept


ACCEPTED = {  # values that mean what they say: they still measure, and the same numbers
    "x": [X.double(), X.t().contiguous().t(), X.clone().requires_grad_(), X.numpy(), X.tolist()],
    "y": [Y.float(), Y[:, None], Y.to(torch.int8), Y.numpy()],
    "batch_size": [1, 4, 10**9, torch.tensor(3)],
    "dtype": [torch.float64, "float64", "torch.float64"],
}


def test_accepted_spellings_measure_the_same_numbers():
    ref = alignctl.measure(_mlp(), X, Y, metrics="fast")
    for kind, values in ACCEPTED.items():
        for v in values:
            kw = {"x": X, "y": Y, **({kind: v} if kind in ("x", "y") else {})}
            opts = {} if kind in ("x", "y") else {kind: v}
            got = _call(alignctl.measure, _mlp(), kw["x"], kw["y"], metrics="fast", **opts)
            assert not isinstance(got, InputError), (kind, v, got)
            for k in ref:
                torch.testing.assert_close(got[k].double(), ref[k].double(), rtol=1e-5, atol=1e-6)


options = st.fixed_dictionaries({}, optional={
    k: st.sampled_from(vs + [None]) for k, vs in BAD_OPTIONS.items() if k != "device"
})  # fmt: skip


@FAST
@given(x=st.sampled_from(sorted(BAD_X) + ["ok"] * 4),
       y=st.sampled_from(sorted(BAD_Y) + ["ok", "none"]),
       opts=options, fn=st.sampled_from(["measure", "jacobian"]))  # fmt: skip
def test_random_argument_mixes_are_a_result_or_one_input_error(x, y, opts, fn):
    xv = X.clone() if x == "ok" else BAD_X[x]()
    yv = Y.clone() if y == "ok" else None if y == "none" else BAD_Y[y]()
    if fn == "jacobian":
        opts = {k: v for k, v in opts.items() if k in ("batch_size", "dtype", "max_memory")}
        yv = None
    result = _call(getattr(alignctl, fn), _mlp(), xv, yv, **opts)
    bad = x != "ok" or (yv is not None and y in BAD_Y) or any(v is not None for v in opts.values())
    if bad:
        assert isinstance(result, InputError), (x, y, opts, result)


# ---- analyze and the monitor: the same rules, up front ----


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from alignctl.runs.checkpoints import write_checkpoint

    root = tmp_path_factory.mktemp("run")
    (root / "alignctl.yaml").write_text(
        "model: {arch: mlp, in_features: 4, hidden: [8], out_features: 3}\ndata: {path: data.pt}\n"
    )
    torch.save({"x_train": X, "y_train": Y}, root / "data.pt")
    from alignctl.runs.models import build_model

    model = build_model({"arch": "mlp", "in_features": 4, "hidden": [8], "out_features": 3}, root)
    (root / "checkpoints").mkdir()
    write_checkpoint(root / "checkpoints" / "step_0.safetensors", model.state_dict(), {"step": 0})
    return alignctl.open_run(root)


@pytest.mark.parametrize(
    "options",
    [{"samples": -1}, {"samples": 0}, {"samples": 2.5}, {"samples": float("nan")},
     {"batch_size": float("nan")}, {"batch_size": 2.5}, {"steps": 0}, {"eps": -1.0},
     {"alpha": float("nan")}, {"on_checkpoint": 5}, {"metrics": 3}],
    ids=repr,
)  # fmt: skip
def test_analyze_refuses_a_wrong_option_before_any_checkpoint(tiny_run, options):
    seen = []
    opts = {"on_checkpoint": lambda *a: seen.append(a), **options}
    with pytest.raises(InputError) as e:
        alignctl.analyze(tiny_run, **opts)
    assert "\n" not in str(e.value) and not seen


@pytest.mark.parametrize("run", ["runs/x", None, 5])
def test_analyze_of_something_else_than_a_run_names_open_run(run):
    with pytest.raises(InputError, match="open_run"):
        alignctl.analyze(run)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"batch_size": 2.5}, "batch_size"), ({"batch_size": float("nan")}, "batch_size"),
     ({"verdict": {"fit": float("nan")}}, "finite"), ({"verdict": {"fit": "abc"}}, "finite"),
     ({"verdict": [1]}, "mapping"), ({"metrics": 5}, "metrics"),
     ({"probe_x": X.to_sparse()}, "sparse"), ({"probe_x": torch.nested.nested_tensor([X[0]])},
                                               "nested")],
    ids=repr,
)  # fmt: skip
def test_monitor_refuses_a_wrong_argument_when_built(kwargs, match):
    kw = {"probe_x": X, "probe_y": Y, **kwargs}
    with pytest.raises(InputError, match=match):
        alignctl.Monitor(_mlp(), kw.pop("probe_x"), kw.pop("probe_y"), out=None, **kw)


@given(v=st.one_of(st.floats(), st.text(max_size=3), st.booleans(), st.none(), st.integers()))
@FAST
def test_verdict_thresholds_are_finite_numbers_or_refused(v):
    try:
        t = thresholds({"fit": v})
    except InputError:
        return
    assert math.isfinite(t["fit"]) and not isinstance(v, bool | str)


def test_the_callers_model_in_train_mode_with_frozen_parts_is_left_as_it_was():
    model = _mlp().train()
    model[0].requires_grad_(False)
    handle = model[3].register_forward_hook(lambda *a: None)
    before = _state(model)
    twin = copy.deepcopy(model)
    got = alignctl.measure(model, X, Y, metrics="standard")
    assert _same(before, _state(model)) and model.training and handle.id in model[3]._forward_hooks
    ref = alignctl.measure(twin, X, Y, metrics="standard")
    assert all(torch.equal(got[k], ref[k]) for k in ref)


# ---- alignment.jsonl lines (the monitor's log) with any JSON values ----

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(width=64),
              st.text(max_size=12)),
    lambda kids: st.one_of(st.lists(kids, max_size=3),
                           st.dictionaries(st.text(max_size=6), kids, max_size=3)),
    max_leaves=8,
)  # fmt: skip
VERDICTS = ("learning", "memorising", "generalising", "robust", "uncertain", "diverged")
KNOWN = ["step", "metrics", "metrics_std", "name", "train_accuracy", "test_accuracy",
         "n_samples", "n_classes", "diverged", "seconds", "time", "verdict", "inferred",
         "evidence", "reason"]  # fmt: skip
good_line = st.fixed_dictionaries({
    "step": st.integers(0, 10**6), "metrics": st.dictionaries(
        st.sampled_from(["centroid_alignment", "jacobian_norm", "\x1b[2Jx", "[red]y"]),
        st.one_of(st.none(), st.floats(-1e6, 1e6)), max_size=3),
})  # fmt: skip
lines = st.one_of(
    good_line,
    st.builds(lambda base, extra: {**base, **extra}, good_line,
              st.dictionaries(st.sampled_from(KNOWN), json_values, max_size=4)),
    json_values,
)  # fmt: skip


@FAST
@given(entries=st.lists(lines, min_size=1, max_size=5))
def test_any_log_lines_give_a_report_with_recomputed_verdicts_or_one_input_error(entries):
    import json
    import tempfile
    from pathlib import Path

    from alignctl.report import render
    from alignctl.report.monitor_log import report_from_log

    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "alignment.jsonl"
        log.write_text("".join(json.dumps(e) + "\n" for e in entries))
        try:
            report = report_from_log(Path(d))
        except InputError as e:
            assert "\n" not in str(e)
            return
    for e in report["checkpoints"]:  # the line's own verdict fields never survive
        assert e["verdict"] in VERDICTS and isinstance(e["inferred"], bool)
    for text in (render.to_markdown(report), render.to_csv(report), render.to_json(report)):
        assert "\x1b" not in text
