"""The inferred verdict on inputs that share a large common offset (every coordinate + 20).

A network with a first-layer bias ignores a common offset for free (and must, for its ReLUs to
see the data's variation), so its Jacobian turns away from x = xbar + z, and the alignment gain
fell below ``no_gain`` for a network that generalises: before, this run read ``memorising``
without a test split (alignment_gain -3.0) and the recommendation was ``try-grokalign``. The
gain now subtracts the inputs' offset term log mean |x - xbar|^2 / |x|^2
(:func:`alignctl.report.evidence.input_offset`), recorded in every entry, so that the fresh
analysis, the cache, torchrun's ranks, the Monitor's log and the API judge with one value."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from alignctl.report.evidence import input_offset, signals
from alignctl.report.verdict import judge, thresholds

T = thresholds(None)
MODEL = """
import torch

def make_net():
    return torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                               torch.nn.ReLU(), torch.nn.Linear(64, 4))
"""
STEPS = (0, 50, 100, 200, 400, 800, 1600)


def _data(offset: float):
    """4 classes, each 2 Gaussian clusters in 10 dimensions, every coordinate + ``offset``."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 10)) * 2.0
    z = rng.integers(0, 8, 200)
    x = (centres[z] + rng.normal(size=(200, 10)) + offset).astype("float32")
    return x, (z % 4).astype("int64")


@pytest.fixture(scope="module")
def offset_run(tmp_path_factory):
    """A plain loop (Adam, full batch, cross-entropy) on offset inputs; no test split; the
    network separates the clusters (see test_the_run_generalises)."""
    root = tmp_path_factory.mktemp("offset20")
    x, y = _data(20.0)
    np.savez(root / "data.npz", x_train=x, y_train=y)
    (root / "models.py").write_text(MODEL)
    cfg = {"model": {"factory": "models.py:make_net"}, "train": {"loss": "cross_entropy"},
           "data": {"path": "data.npz", "num_classes": 4}}  # fmt: skip
    (root / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    (root / "checkpoints").mkdir()
    torch.manual_seed(0)
    ns: dict = {}
    exec(MODEL, ns)
    net = ns["make_net"]()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for step in range(max(STEPS) + 1):
        if step in STEPS:
            torch.save({"model_state_dict": net.state_dict(), "step": step},
                       root / "checkpoints" / f"ckpt-{step}.pt")  # fmt: skip
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    # fresh samples of the same clusters: the network generalises
    xn, yn = _data(20.0)
    rng = np.random.default_rng(1)
    with torch.no_grad():
        noisy = torch.as_tensor(xn + rng.normal(size=xn.shape).astype("float32") * 0.1)
        acc = float((net(noisy).argmax(1) == torch.as_tensor(yn)).double().mean())
    return root, acc


def _reference_offset(x) -> float:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    z = x - x.mean(0)
    return math.log(np.mean((z**2).sum(1) / (x**2).sum(1)))


def test_the_run_generalises(offset_run):
    assert offset_run[1] >= 0.95


def test_input_offset_matches_float64_reference():
    x, _ = _data(20.0)
    assert input_offset(torch.as_tensor(x)) == pytest.approx(_reference_offset(x), rel=1e-12)
    assert input_offset(torch.as_tensor(x)) < -4
    # centred data: nothing to subtract (up to the mean of a sample)
    xc = x - x.mean(0)
    assert abs(input_offset(torch.as_tensor(xc))) < 0.02
    # images: per-sample flattening
    img = torch.rand(6, 3, 4, 4, dtype=torch.float64) + 2
    assert input_offset(img) == pytest.approx(_reference_offset(img.numpy()), rel=1e-12)
    # no spread to measure: None (one sample, all alike); zero samples are left out
    assert input_offset(torch.ones(1, 5)) is None and input_offset(torch.ones(4, 5)) is None
    with_zero = torch.cat([torch.zeros(1, 10), torch.as_tensor(x[:20])])
    mean = with_zero.double().mean(0)
    r = ((with_zero[1:].double() - mean) ** 2).sum(1) / (with_zero[1:].double() ** 2).sum(1)
    assert input_offset(with_zero) == pytest.approx(math.log(float(r.mean())), rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.floats(-50, 50), st.integers(0, 2**31 - 1))
def test_the_correction_never_adds_a_memorising_read(offset, seed):
    """Whatever the inputs, the corrected gain is never below the uncorrected one."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 5, generator=g, dtype=torch.float64) + offset
    o = input_offset(x)
    start = {"step": 0, "train_accuracy": 0.3, "metrics": {"centred_alignment_full": 0.1,
                                                            "centred_norm": 1.0}}  # fmt: skip
    ck = {"step": 900, "train_accuracy": 1.0, "input_offset": o,
          "metrics": {"centred_alignment_full": 0.002, "centred_norm": 30.0}}  # fmt: skip
    plain = signals({**ck, "input_offset": None}, [start])["alignment_gain"]
    assert signals(ck, [start])["alignment_gain"] >= plain


def test_judge_subtracts_the_entrys_offset():
    start = {"step": 0, "train_accuracy": 0.3, "metrics": {"centred_alignment_full": 0.1,
                                                            "centred_norm": 1.0}}  # fmt: skip
    fell = 0.1 * math.exp(-3.0)  # alignment_gain -3.0
    ck = {"step": 100, "train_accuracy": 1.0, "test_accuracy": None,
          "metrics": {"centred_alignment_full": fell, "centred_norm": 30.0}}  # fmt: skip
    hist = [{"step": 10, "train_accuracy": 1.0}]
    before = judge(ck, n_classes=4, grokked=None, t=T, history=[start, *hist])
    assert before["verdict"] == "memorising"  # an entry without the term: as before
    j = judge({**ck, "input_offset": -2.5}, n_classes=4, grokked=None, t=T,
              history=[start, *hist])  # fmt: skip
    ev = {e["signal"]: e for e in j["evidence"]}
    assert j["verdict"] == "uncertain"
    assert ev["alignment_gain"]["value"] == pytest.approx(-0.5)
    assert ev["alignment_gain"]["reads"] == "nothing"
    assert ev["input_offset"]["value"] == -2.5
    # a positive term (a mean share above 1, possible for points near the origin) never
    # lowers the gain
    up = judge({**ck, "input_offset": 0.7}, n_classes=4, grokked=None, t=T,
               history=[start, *hist])  # fmt: skip
    assert up["verdict"] == "memorising" and "input_offset" not in {
        e["signal"] for e in up["evidence"]
    }


def _verdicts(report) -> list:
    return [(e["step"], e["verdict"], e.get("input_offset")) for e in report["checkpoints"]]


def test_offset_run_no_longer_reads_memorising(offset_run, tmp_path):
    """Before: memorising at steps 800 and 1600 (alignment_gain -3.09, -2.99), recommendation
    try-grokalign. After: not memorising anywhere; one value for the API, --no-cache and the
    cache (miss, then hit)."""
    import os
    import subprocess
    import sys

    from alignctl import analyze, open_run

    root = offset_run[0]
    x = np.load(root / "data.npz")["x_train"]
    api = analyze(open_run(root), device="cpu")
    said = _verdicts(api)
    assert all(v != "memorising" for _, v, _ in said), said
    assert api["recommendation"]["action"] != "try-grokalign"
    offsets = {o for _, _, o in said}
    assert len(offsets) == 1 and offsets.pop() == pytest.approx(_reference_offset(x), rel=1e-9)
    last = {e["signal"]: e for e in api["checkpoints"][-1]["evidence"]}
    assert last["alignment_gain"]["value"] > T["no_gain"]
    assert last["input_offset"]["value"] < -4
    cached = []
    for _ in range(2):  # a miss, then every entry from the cache
        rep = analyze(open_run(root), device="cpu", cache=tmp_path / "cache")
        cached.append(rep)
    assert cached[1]["cache"]["hits"] == len(STEPS)
    out = tmp_path / "r.json"
    src = str(Path(__file__).resolve().parents[1] / "src")
    r = subprocess.run([sys.executable, "-m", "alignctl", "analyze", str(root), "--no-cache",
                        "--device", "cpu", "--json", str(out)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": src})  # fmt: skip
    assert r.returncode == 0, r.stderr
    cli = json.loads(out.read_text())
    for rep in (*cached, cli):
        assert _verdicts(rep) == said
        assert rep["recommendation"]["action"] == api["recommendation"]["action"]
        assert [e["evidence"] for e in rep["checkpoints"]] == [
            e["evidence"] for e in api["checkpoints"]
        ]
    entry = json.loads(next((tmp_path / "cache").glob("*.json")).read_text())
    assert entry["format"] == 4 and "input_offset" in entry["entry"]


def test_monitor_log_judges_with_the_probes_offset(offset_run, tmp_path):
    """The Monitor measuring the same checkpoints on the same samples records the same term in
    its log, and the report from the log reads the same verdicts."""
    import alignctl
    from alignctl.report.monitor_log import report_from_log

    root = offset_run[0]
    d = np.load(root / "data.npz")
    x, y = torch.as_tensor(d["x_train"]), torch.as_tensor(d["y_train"])
    ns: dict = {}
    exec(MODEL, ns)
    net = ns["make_net"]()
    mon = alignctl.Monitor(net, x, y, every=1, metrics="standard", out=tmp_path / "m")
    for step in STEPS:
        state = torch.load(root / "checkpoints" / f"ckpt-{step}.pt", weights_only=True)
        net.load_state_dict(state["model_state_dict"])
        mon.measure(step)
    mon.close()
    lines = [json.loads(t) for t in (tmp_path / "m" / "alignment.jsonl").read_text().splitlines()]
    offsets = {ln["input_offset"] for ln in lines}
    assert len(offsets) == 1 and offsets.pop() == pytest.approx(_reference_offset(x), rel=1e-9)
    rep = report_from_log(tmp_path / "m")
    said = [e["verdict"] for e in rep["checkpoints"]]
    assert "memorising" not in said, said
    from alignctl import analyze, open_run

    assert said == [v for _, v, _ in _verdicts(analyze(open_run(root), device="cpu"))]


def test_token_inputs_get_no_offset(tmp_path):
    """Token ids are not coordinates: the Jacobian is taken at the embedding, and a token
    model's entries carry no term (None), so nothing is subtracted."""
    from alignctl import analyze, open_run

    model = (
        "import torch\n\ndef make_net():\n"
        "    return torch.nn.Sequential(torch.nn.Embedding(7, 4), torch.nn.Flatten(),\n"
        "                               torch.nn.Linear(8, 3))\n"
    )
    (tmp_path / "models.py").write_text(model)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 7, size=(30, 2)).astype("int64")
    np.savez(tmp_path / "data.npz", x_train=x, y_train=(x.sum(1) % 3).astype("int64"))
    cfg = {"model": {"factory": "models.py:make_net"}, "data": {"path": "data.npz"}}
    (tmp_path / "alignctl.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "checkpoints").mkdir()
    ns: dict = {}
    exec(model, ns)
    torch.manual_seed(0)
    torch.save({"model_state_dict": ns["make_net"]().state_dict(), "step": 0},
               tmp_path / "checkpoints" / "ckpt-0.pt")  # fmt: skip
    rep = analyze(open_run(tmp_path), device="cpu")
    assert [e["input_offset"] for e in rep["checkpoints"]] == [None]


@pytest.mark.parametrize("nproc", [2])
def test_torchrun_ranks_judge_with_the_same_offset(offset_run, tmp_path, nproc):
    """2 real gloo ranks deal the checkpoints (report/sharded.py): each entry carries the term
    its rank computed from the same samples, and rank 0's merge reads the single process's
    verdicts and evidence."""
    pytest.importorskip("torch.distributed")
    from test_distributed import alignctl as ranks

    from alignctl import analyze, open_run

    root = offset_run[0]
    out = tmp_path / "r.json"
    r = ranks(["analyze", root, "--device", "cpu", "--json", out], nproc, tmp_path)
    assert r.returncode == 0, r.stderr
    merged = json.loads(out.read_text())
    api = analyze(open_run(root), device="cpu")
    assert _verdicts(merged) == _verdicts(api)
    assert [e["evidence"] for e in merged["checkpoints"]] == [
        e["evidence"] for e in api["checkpoints"]
    ]
