"""alignctl.Monitor in a plain PyTorch loop: training bit for bit unchanged, the strict-JSON
log, TensorBoard scalars, checkpoints that `alignctl analyze` reads, the log rendered as a
report, and early stopping from the recommendation."""

import json
import logging
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import alignctl
from alignctl.cli.assemble import app
from alignctl.errors import InputError

runner = CliRunner()
MLP = {"arch": "mlp", "in_features": 6, "hidden": [16], "out_features": 3}


class Noisy(torch.nn.Module):
    """Draws from every global RNG in every forward, eval mode included: a measurement that
    did not restore them would shift the training that follows."""

    def forward(self, x):
        jitter = torch.rand(()) + random.random() + float(np.random.rand())
        return x + 0.0 * jitter


def data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return x, y


def train(monitor_kwargs=None, steps=25, tmp=None):
    """A loop with dropout, a frozen-mode submodule and data order from torch, random and
    numpy; returns (state dict, final RNG draws, monitor)."""
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 16), Noisy(), torch.nn.ReLU(), torch.nn.Dropout(0.3),
        torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 3),
    )  # fmt: skip
    net[4].eval()  # a submodule the user keeps in eval mode: must stay so
    x, y = data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    mon = alignctl.Monitor(net, x[:32], y[:32], **monitor_kwargs) if monitor_kwargs else None
    for step in range(steps):
        idx = torch.randperm(len(x))[:16]
        idx = idx[np.random.permutation(16)][: 12 + random.randrange(4)]
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        if mon is not None:
            mon.step(step)  # between backward and step: gradients must be left as they are
        opt.step()
    assert net.training and not net[4].training
    draws = (torch.rand(3).tolist(), random.random(), float(np.random.rand()))
    return net.state_dict(), draws, mon


def test_training_is_bit_for_bit_unchanged(tmp_path):
    off, draws_off, _ = train()
    kw = {"every": 3, "out": tmp_path / "m", "metrics": "standard", "tensorboard": True}
    on, draws_on, mon = train(kw)
    assert len(mon.entries) == 9  # steps 0, 3, ..., 24
    assert draws_on == draws_off
    for k in off:
        assert torch.equal(off[k], on[k]), k


def test_log_lines_are_strict_json_and_equal_measure(tmp_path):
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x, y = data()
    mon = alignctl.Monitor(net, x[:40], y[:40], every=5, out=tmp_path / "m", test=(x[40:], y[40:]))
    for step in range(11):
        mon.step(step)
        mon.step(step)  # twice at one step: measured once
    want = alignctl.measure(net, x[:40], metrics=["centroid_alignment", "centroid_norm"])
    with torch.no_grad():
        net[0].weight.fill_(float("nan"))  # a diverged network: nulls, never NaN
    mon.measure(12)
    mon.close()
    lines = (tmp_path / "m" / "alignment.jsonl").read_text().splitlines()
    parse = lambda s: json.loads(s, parse_constant=lambda c: pytest.fail(f"{c} in the log"))  # noqa: E731
    entries = [parse(ln) for ln in lines]
    assert [e["step"] for e in entries] == [0, 5, 10, 12]
    last_ok = entries[2]
    for k, v in want.items():
        assert last_ok["metrics"][k] == pytest.approx(float(v.double().mean()), rel=1e-6)
        assert last_ok["metrics_std"][k] == pytest.approx(float(v.double().std(unbiased=False)))
    assert last_ok["test_accuracy"] is not None and last_ok["time"] > 0
    assert entries[3]["diverged"] and all(v is None for v in entries[3]["metrics"].values())
    summary = json.loads((tmp_path / "m" / "run.json").read_text())
    assert summary["finished"] and summary["measurements"] == 4


def test_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, _, mon = train({"every": 10, "out": tmp_path / "m", "tensorboard": True}, steps=21)
    mon.close()
    acc = EventAccumulator(str(tmp_path / "m" / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"alignment/centroid_alignment", "alignment/probe_accuracy"} <= set(tags)
    steps = [e.step for e in acc.Scalars("alignment/centroid_alignment")]
    assert steps == [0, 10, 20]


def fit_mlp(tmp_path, **kw):
    torch.manual_seed(0)
    net = alignctl.MODELS.get("mlp")(**{k: v for k, v in MLP.items() if k != "arch"})
    x, y = data()
    opt = torch.optim.AdamW(net.parameters(), 1e-2)
    with alignctl.Monitor(net, x[:48], y[:48], out=tmp_path / "m", **kw) as mon:
        for step in range(31):
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if mon.step(step):
                break
    return mon


def test_checkpoints_analyse_to_the_monitor_values(tmp_path):
    mon = fit_mlp(tmp_path, every=10, save_checkpoints=True, model_config=MLP)
    r = runner.invoke(app, ["analyze", str(tmp_path / "m"), "--metrics", "fast", "--json", "-"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert [c["step"] for c in report["checkpoints"]] == [0, 10, 20, 30]
    for got, want in zip(report["checkpoints"], mon.entries, strict=True):
        for k, v in want["metrics"].items():
            assert got["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-7)
        assert got["train_accuracy"] == pytest.approx(want["train_accuracy"])


def test_checkpoints_without_a_model_config_say_what_is_missing(tmp_path):
    with pytest.warns(UserWarning, match="needs the model"):
        fit_mlp(tmp_path, every=10, save_checkpoints=True)
    r = runner.invoke(app, ["analyze", str(tmp_path / "m")])
    assert r.exit_code == 2 and "model" in r.stderr


def test_a_log_only_run_renders_as_a_report_with_gates(tmp_path):
    mon = fit_mlp(tmp_path, every=10)
    base = ["analyze", str(tmp_path / "m")]
    r = runner.invoke(app, [*base, "--json", "-"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert [c["step"] for c in report["checkpoints"]] == [e["step"] for e in mon.entries]
    assert report["recommendation"] == mon.recommendation()
    assert report["verdict"] == mon.entries[-1]["verdict"]
    table = runner.invoke(app, base)
    assert table.exit_code == 0
    assert "recommendation" in table.stdout  # columns are chosen by the terminal's width
    gate = runner.invoke(app, [*base, "--fail-under", "centroid_alignment=1", "-q"])
    assert gate.exit_code == 1
    # a line being written (no newline yet) is left for later; a broken one is skipped
    with open(tmp_path / "m" / "alignment.jsonl", "a") as fh:
        fh.write('not json\n{"step": 99, "metr')
    r = runner.invoke(app, [*base, "--json", "-"])
    assert r.exit_code == 0 and len(json.loads(r.stdout)["checkpoints"]) == len(mon.entries)
    assert "line" in r.stderr


def test_stop_when_stop_stops_with_the_reason_logged(tmp_path, caplog):
    # Thresholds under which any network with a held-out split is "generalising" with flat
    # test accuracy: the real recommend() then says stop from the first measurement, and the
    # monitor stops at the second (one point shows no trend).
    x, y = data()
    easy = {"fit": 0.0, "skill": -10.0, "plateau": 1e9, "chance_skill": -10.0}
    with caplog.at_level(logging.WARNING, logger="alignctl"):
        mon = fit_mlp(tmp_path, every=10, stop_when="stop", verdict=easy, test=(x[48:], y[48:]))
    assert mon.entries[0]["verdict"] == "generalising"
    assert mon.should_stop and [e["step"] for e in mon.entries] == [0, 10]
    assert "stopping at step 10" in mon.stop_reason and mon.stop_reason in caplog.text
    assert json.loads((tmp_path / "m" / "run.json").read_text())["stopped"] == mon.stop_reason
    # without stop_when the same recommendation never stops training
    again = fit_mlp(tmp_path, every=10, verdict=easy, test=(x[48:], y[48:]), overwrite=True)
    assert not again.should_stop and again.recommendation()["action"] == "stop"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"every": 0}, "every"),
        ({"stop_when": "later"}, "stop_when"),
        ({"metrics": "nope"}, "nope"),
        ({"out": None, "tensorboard": True}, "out folder"),
        ({"save_checkpoints": True, "model_config": {**MLP, "hidden": [7]}}, "does not describe"),
    ],
)
def test_bad_arguments_are_input_errors(tmp_path, kwargs, match):
    net = alignctl.MODELS.get("mlp")(6, [16], 3)
    x, y = data()
    with pytest.raises(InputError, match=match):
        alignctl.Monitor(net, x, y, **{"out": tmp_path / "m", **kwargs})


def test_an_existing_log_is_kept_unless_overwrite(tmp_path):
    fit_mlp(tmp_path, every=10)
    before = (tmp_path / "m" / "alignment.jsonl").read_text()
    with pytest.raises(InputError, match="overwrite"):
        fit_mlp(tmp_path, every=10)
    assert (tmp_path / "m" / "alignment.jsonl").read_text() == before
    fit_mlp(tmp_path, every=15, overwrite=True)
    assert len((tmp_path / "m" / "alignment.jsonl").read_text().splitlines()) == 3


def test_a_folder_holding_another_run_is_left_alone(tmp_path):
    """qa4: only an existing alignment.jsonl stopped the monitor; an `alignctl train` run's
    checkpoints, run.json and alignctl.yaml in `out` were deleted without overwrite=True."""
    run = tmp_path / "m"
    (run / "checkpoints" / "state").mkdir(parents=True)
    (run / "checkpoints" / "step_00000000.safetensors").write_bytes(b"weights")
    (run / "run.json").write_text('{"status": "finished"}')
    (run / "train_log.jsonl").write_text("{}\n")
    before = sorted((p.relative_to(run), p.read_bytes() if p.is_file() else None)
                    for p in run.rglob("*"))  # fmt: skip
    net = alignctl.MODELS.get("mlp")(6, [16], 3)
    x, y = data()
    for overwrite in (False, True):
        with pytest.raises(InputError, match="overwrite|alignctl train"):
            alignctl.Monitor(net, x, y, out=run, overwrite=overwrite)
    after = sorted((p.relative_to(run), p.read_bytes() if p.is_file() else None)
                   for p in run.rglob("*"))  # fmt: skip
    assert after == before


@pytest.mark.parametrize("shift", [5, -3])
def test_probe_labels_out_of_range_are_input_errors(shift):
    """qa4: with the `fast` metrics (no label read) labels no output stands for gave a probe
    accuracy of 0 and verdicts from it, silently."""
    net = alignctl.MODELS.get("mlp")(6, [16], 3)
    x, y = data()
    with pytest.raises(InputError, match="out of range"):
        alignctl.Monitor(net, x, y + shift, out=None).measure(0)
    with pytest.raises(InputError, match="out of range"):
        alignctl.Monitor(net, x, y, out=None, test=(x, y + shift)).measure(0)


def test_measuring_inside_inference_mode(tmp_path):
    """qa4: mon.step (or measure) inside a caller's `torch.inference_mode()` block (a
    validation loop) failed with "the model's output does not depend on its input"."""
    torch.manual_seed(0)
    net = alignctl.MODELS.get("mlp")(6, [16], 3)
    x, y = data()
    want = alignctl.Monitor(net, x, y, out=None, metrics="standard").measure(0)["metrics"]
    with torch.inference_mode():
        x_inf = x.clone()  # an inference tensor: it can never enter autograd as it is
        got = alignctl.Monitor(net, x_inf, y, out=None, metrics="standard").measure(0)
        direct = alignctl.measure(net, x_inf, y, metrics=["jacobian_alignment"])
    assert got["metrics"] == want
    mean = float(direct["jacobian_alignment"].double().mean())  # one metric: another path
    assert mean == pytest.approx(want["jacobian_alignment"], rel=1e-5)


@pytest.mark.parametrize(
    "option",
    [["--split", "test"], ["--samples", "5"], ["--robustness"], ["--sketch", "4"],
     ["--metrics", "jacobian_norm"], ["--weights", "ema"], ["--keep-samples"]],
)  # fmt: skip
def test_measurement_options_on_a_log_only_run_are_errors(tmp_path, option):
    """qa4: a log-only run ignored --split, --samples, --robustness, --sketch, --metrics
    it does not hold...: exit 0 with a report that did not do what was asked."""
    fit_mlp(tmp_path, every=10)
    r = runner.invoke(app, ["analyze", str(tmp_path / "m"), *option, "--json", "-"])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1
    assert option[0] in r.stderr
    ok = runner.invoke(app, ["analyze", str(tmp_path / "m"), "--metrics", "fast", "--json", "-"])
    assert ok.exit_code == 0, ok.output


def test_a_monitor_run_folder_can_be_moved(tmp_path):
    """qa4: alignctl.yaml named the probe by its absolute path, so a moved or copied run (a CI
    artifact) failed to analyse, or read another run's probe once the old folder was reused."""
    import shutil

    first = fit_mlp(tmp_path, every=15, save_checkpoints=True, model_config=MLP)
    shutil.copytree(tmp_path / "m", tmp_path / "moved")
    shutil.rmtree(tmp_path / "m")
    r = runner.invoke(app, ["analyze", str(tmp_path / "moved"), "--metrics", "fast", "--json", "-"])
    assert r.exit_code == 0, r.output
    got = [c["train_accuracy"] for c in json.loads(r.stdout)["checkpoints"]]
    assert got == pytest.approx([e["train_accuracy"] for e in first.entries])


@pytest.mark.parametrize(
    "probe", [{"input_ids": torch.zeros(2, 3)}, "abc", [[1.0, 2.0], [3.0]]], ids=str
)
def test_a_probe_that_is_not_an_array_is_an_input_error(probe):
    """qa4: a tokenizer's dict, a string or a ragged list raised RuntimeError / TypeError /
    ValueError from torch instead of the library's InputError."""
    with pytest.raises(InputError, match="probe_x"):
        alignctl.Monitor(torch.nn.Linear(3, 2), probe, out=None)


def test_a_probe_without_labels_gives_a_recommendation(tmp_path):
    """qa4: probe_y=None (allowed) made mon.recommendation() and `alignctl analyze` of the
    log fail with a TypeError (the recommendation subtracted missing train accuracies)."""
    torch.manual_seed(0)
    net = alignctl.MODELS.get("mlp")(6, [16], 3)
    x, y = data()
    with alignctl.Monitor(net, x[:32], every=1, out=tmp_path / "m") as mon:
        for step in range(4):
            mon.step(step)
    assert mon.recommendation()["action"] == "investigate"
    assert "labels" in mon.recommendation()["reason"]
    r = runner.invoke(app, ["analyze", str(tmp_path / "m"), "--json", "-"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["recommendation"] == mon.recommendation()
    with pytest.raises(InputError, match="probe_y"):  # could never stop: said at once
        alignctl.Monitor(net, x[:32], out=None, stop_when="stop", test=(x, y))


@pytest.mark.parametrize(
    "line",
    [
        '{"step": "abc", "metrics": {}}',
        '{"step": true, "metrics": {}}',
        '{"step": 1e300, "metrics": {}}',
        '{"step": 5, "metrics": {"centroid_alignment": "x"}}',
        '{"step": 5, "metrics": {"centroid_alignment": 1e999}}',
        '{"step": 5, "metrics": {"centroid_alignment": NaN}}',
        '{"step": 5, "metrics": {"centroid_alignment": 0.1}, "train_accuracy": "0.5"}',
        '{"step": 5, "metrics": {"centroid_alignment": 0.1}, "train_accuracy": 5}',
        '{"step": 5, "metrics": {}, "n_classes": 0}',
        '{"step": 5, "metrics": {}, "diverged": "no"}',
    ],
)  # fmt: skip
def test_a_log_line_of_the_wrong_shape_is_skipped_with_a_note(tmp_path, line):
    """qa4: lines that parse as JSON but are not measurements were taken (a string metric, an
    infinite one, an accuracy of 5) or crashed analyze with an internal error."""
    mon = fit_mlp(tmp_path, every=10)
    with open(tmp_path / "m" / "alignment.jsonl", "a") as fh:
        fh.write(line + "\n")
    r = runner.invoke(app, ["analyze", str(tmp_path / "m"), "--json", "-"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(c))
    assert [c["step"] for c in report["checkpoints"]] == [e["step"] for e in mon.entries]
    assert "not a measurement" in r.stderr


def test_overwrite_replaces_the_tensorboard_events_too(tmp_path):
    """qa4: overwrite=True removed the log, checkpoints and run.json but kept the old run's
    TensorBoard event files, which TensorBoard then drew mixed with the new run's."""
    fit_mlp(tmp_path, every=10, tensorboard=True)
    old = set((tmp_path / "m" / "tensorboard").iterdir())
    with pytest.raises(InputError, match="tensorboard"):
        alignctl.Monitor(torch.nn.Linear(6, 3), data()[0], out=tmp_path / "m" / ".." / "m")
    fit_mlp(tmp_path, every=10, tensorboard=True, overwrite=True)
    assert not old & set((tmp_path / "m" / "tensorboard").iterdir())
