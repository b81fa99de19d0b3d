"""The inferred verdict's start: the run's own step 0 only when it is the initialisation, else a
fresh seeded initialisation of the model (Lightning / Hugging Face runs never save step 0)."""

import math

import numpy as np
import pytest
import torch
import yaml

from alignctl.report.evidence import infer, start
from alignctl.report.reference import needs_reference
from alignctl.report.verdict import judge, thresholds

T = thresholds(None)


def ck(train, step, norm=1.0, align=0.01, **extra):
    m = {"centred_norm": norm, "centred_alignment_full": align}
    return {"step": step, "train_accuracy": train, "test_accuracy": None, "metrics": m,
            "diverged": False, **extra}  # fmt: skip


def test_without_step_zero_a_fresh_initialisation_stands_in_for_norm_growth_only():
    history = [ck(1.0, 100, norm=2.0)]  # first checkpoint: already fitted, step 100
    ref = {"source": "fresh initialisation", "seed": 0, "metrics": {"centred_norm": 1.0,
           "centred_alignment_full": 0.01}}  # fmt: skip
    now = ck(1.0, 500, norm=math.exp(1.5), align=0.01 * math.exp(-3.0))
    # no reference: nothing to compare with
    assert judge(now, n_classes=10, grokked=None, t=T, history=history)["verdict"] == "uncertain"
    j = judge(now, n_classes=10, grokked=None, t=T, history=history, reference=ref)
    ev = {e["signal"]: e for e in j["evidence"]}
    assert j["verdict"] == "generalising" and j["inferred"]
    assert ev["norm_growth"]["value"] == pytest.approx(1.5)
    # the alignment of another initialisation is too far from this run's own to read
    assert ev["alignment_gain"]["reads"].startswith("nothing: compared with a fresh")
    assert "no step-0 checkpoint" in ev["reference"]["reads"]
    # its own step 0, when there, wins over the stand-in (and both signals read)
    own = [ck(0.1, 0, norm=1.0, align=0.01), *history]
    assert infer(now, own, T, ref)[0] == "uncertain"  # growth says general, gain memorising


@pytest.mark.parametrize(
    "first",
    [
        ck(1.0, 0, norm=5.0),  # named "epoch 0" but saved after training: already fitted
        ck(0.1, 0, norm=5.0, step_unit="checkpoint index"),  # a position, not a step
        ck(0.1, 0, norm=5.0, diverged=True),
    ],
)
def test_a_step_zero_that_is_not_the_start_is_not_compared_with(first):
    now = ck(1.0, 500, norm=5.0 * math.exp(0.5))  # growth 0.5 from it would read general
    history = [first, ck(1.0, 100)]
    assert start(history, None, T["fit"]) == (None, None)
    assert judge(now, n_classes=10, grokked=None, t=T, history=history)["verdict"] == "uncertain"


def test_needs_reference_only_without_a_known_step_zero():
    class Ref:
        def __init__(self, step):
            self.step = step

    assert needs_reference([Ref(10), Ref(20)])
    assert needs_reference([Ref(None), Ref(None)])  # positions, not steps
    assert not needs_reference([Ref(0), Ref(20)])
    assert not needs_reference([])


def _run_without_step_zero(root):
    """A plain loop saving every 20 steps from step 20 (no step 0), data without a test split."""
    from safetensors.torch import save_file

    from alignctl.runs.models import build_model

    rng = np.random.default_rng(0)
    means = rng.normal(size=(3, 8)) * 3
    y = rng.integers(0, 3, 90)
    x = (means[y] + rng.normal(size=(90, 8))).astype("float32")
    root.mkdir()
    np.savez(root / "data.npz", x_train=x, y_train=y)
    model = {"arch": "mlp", "in_features": 8, "hidden": [32], "out_features": 3}
    (root / "alignctl.yaml").write_text(yaml.safe_dump({"model": model, "data": {
        "path": "data.npz", "num_classes": 3}}))  # fmt: skip
    torch.manual_seed(1)
    net = build_model(model, root)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    (root / "checkpoints").mkdir()
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for step in range(1, 121):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
        if step % 20 == 0:
            save_file(net.state_dict(), str(root / "checkpoints" / f"step_{step}.safetensors"))


def test_analyze_measures_the_stand_in_and_the_cache_keeps_it(tmp_path):
    from alignctl import analyze, open_run
    from alignctl.geometry.measure import measure
    from alignctl.runs.models import build_model

    _run_without_step_zero(tmp_path / "run")
    run = open_run(tmp_path / "run")
    report = analyze(run, device="cpu", threads=1)
    ref = report["reference"]
    assert ref["source"] == "fresh initialisation"
    torch.manual_seed(ref["seed"])
    fresh = build_model(run.config.model, run.config.base_dir)
    data = run.load_data()
    want = measure(fresh, data.x_train, data.y_train, metrics="centred_norm", device="cpu")
    assert ref["metrics"]["centred_norm"] == pytest.approx(float(want["centred_norm"].mean()))
    last = report["checkpoints"][-1]
    assert last["inferred"] and any(e["signal"] == "reference" for e in last["evidence"])
    # cached: measured once, then every checkpoint a hit; the stand-in and verdicts the same
    first = analyze(open_run(tmp_path / "run"), device="cpu", threads=1, cache=tmp_path / "c")
    again = analyze(open_run(tmp_path / "run"), device="cpu", threads=1, cache=tmp_path / "c")
    assert again["cache"]["misses"] == 0
    for rep in (first, again):
        assert rep["reference"] == ref
        assert [c["evidence"] for c in rep["checkpoints"]] == [
            c["evidence"] for c in report["checkpoints"]
        ]
