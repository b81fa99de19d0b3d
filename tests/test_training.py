"""Training: exact resume (in-process and after kill -9), Ctrl-C, atomic checkpoints, run
files, and a training step for every preset with every regulariser."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from alignctl import REGULARISERS, Trainer
from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.runs.config import config_from_dict
from alignctl.train.presets import PRESETS, preset_reg_defaults

TINY = {
    "model": {"arch": "mlp", "in_features": 10, "hidden": [16, 16], "out_features": 2},
    "data": {"task": "sparse-parity", "n": 200, "n_bits": 10, "k": 3, "seed": 0},
    "train": {
        "epochs": 6, "batch_size": 32, "loss": "cross_entropy", "seed": 0,
        "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1},
        "regularisers": [{"name": "grokfast", "alpha": 0.8, "lamb": 0.1},
                         {"name": "grokalign", "lambda": 0.1}],
    },
    "grokked": {"test_acc": 0.9},
}  # fmt: skip


def _weights(run: Path) -> dict:
    last = sorted((run / "checkpoints").glob("step_*.safetensors"))[-1]
    return load_file(str(last))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _trainer(run: Path, cfg: dict = TINY) -> Trainer:
    run.mkdir(parents=True, exist_ok=True)
    return Trainer(run, config_from_dict(cfg, run), "cpu")


def test_resume_is_bit_identical_in_process(tmp_path):
    ref = _trainer(tmp_path / "ref")
    ref.fit(6, save_every=1)
    part = _trainer(tmp_path / "part")
    part.fit(3, save_every=1)  # stops after epoch 3, checkpoint written
    resumed = _trainer(tmp_path / "part")
    resumed.restore()
    resumed.fit(6, save_every=1)
    assert _same(_weights(tmp_path / "ref"), _weights(tmp_path / "part"))
    assert not _same(
        _weights(tmp_path / "ref"),
        load_file(str(tmp_path / "ref/checkpoints/step_00000000.safetensors")),
    )


def test_interrupt_mid_epoch_then_resume_is_bit_identical(tmp_path):
    ref = _trainer(tmp_path / "ref")
    ref.fit(4)
    part = _trainer(tmp_path / "part")
    steps = iter(range(10**6))
    summary = part.fit(4, should_stop=lambda: next(steps) == 9)  # 7 batches an epoch: mid-epoch 2
    assert summary["interrupted"] and part.batch_index not in (0, 7)
    resumed = _trainer(tmp_path / "part")
    resumed.restore()
    resumed.fit(4)
    assert _same(_weights(tmp_path / "ref"), _weights(tmp_path / "part"))
    logs = [json.loads(x) for x in (tmp_path / "part/train_log.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in logs] == [0, 1, 2, 3, 4]  # no duplicated lines after resume


EPOCHS = 60  # of the CLI runs killed below


def _cli_run(folder: Path, name: str, epochs: int = EPOCHS) -> list[str]:
    cfg = folder / "tiny.yaml"
    if not cfg.exists():
        cfg.write_text(yaml.safe_dump(TINY))
    return [sys.executable, "-m", "alignctl", "train", "--config", str(cfg), "--out",
            str(folder / name), "--epochs", str(epochs), "--save-every", "1", "--quiet",
            "--device", "cpu"]  # fmt: skip


def _cli_resume(run: Path) -> list[str]:
    return [sys.executable, "-m", "alignctl", "train", "--resume", str(run), "--epochs",
            str(EPOCHS), "--quiet", "--save-every", "1", "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def cli_ref(tmp_path_factory) -> Path:
    """The uninterrupted CLI run every killed run must end identical to."""
    folder = tmp_path_factory.mktemp("cli_ref")
    subprocess.run(_cli_run(folder, "ref"), check=True, capture_output=True)
    return folder / "ref"


def _wait_for(cond, proc, timeout=60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not cond():
        time.sleep(0.005)


def _n_ckpts(run: Path) -> int:
    return len(list((run / "checkpoints").glob("step_*.safetensors")))


def _assert_finished_like(run: Path, ref: Path) -> None:
    assert not list(run.rglob(".*tmp*"))
    assert _same(_weights(ref), _weights(run))
    summary = json.loads((run / "run.json").read_text())
    assert summary["epochs_done"] == EPOCHS and summary["status"] == "finished"
    logs = [json.loads(x)["epoch"] for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert logs == list(range(EPOCHS + 1))  # every evaluation once, none lost or repeated


@pytest.mark.parametrize("sig", [signal.SIGINT])  # SIGKILL: the test below, at 4 moments
def test_killed_run_resumes_to_identical_weights(tmp_path, sig, cli_ref):
    ckpts = tmp_path / "run" / "checkpoints"
    for _ in range(3):  # a poller starved until the run finished never interrupted it: again
        proc = subprocess.Popen(_cli_run(tmp_path, "run"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)  # fmt: skip
        _wait_for(lambda: _n_ckpts(tmp_path / "run") >= 8, proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            break
        shutil.rmtree(tmp_path / "run")
    assert b"Traceback" not in err
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and b"--resume" in err  # 130: `train && analyze` stops
    # every file on disk is loadable, whatever the moment of the kill
    for f in ckpts.glob("step_*.safetensors"):
        load_file(str(f))
    if sig == signal.SIGINT:  # kill -9 can land inside an atomic write: resume cleans up
        assert not list(ckpts.rglob(".*tmp*"))
        summary = json.loads((tmp_path / "run" / "run.json").read_text())
        assert summary["status"] == "interrupted" and summary["steps"] == (
            summary["epochs_completed"] * summary["batches_per_epoch"]
            + summary["batches_into_epoch"]
        )
    r = subprocess.run(_cli_resume(tmp_path / "run"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    _assert_finished_like(tmp_path / "run", cli_ref)


def test_kill_9_at_several_moments_always_resumes_bit_identical(tmp_path, cli_ref):
    """One run killed four times: while creating the run (the ~70 ms between alignctl.yaml
    and step 0), at a random moment of a resume, right after a checkpoint lands, and while a
    second writer is refused; each resume goes on from what the kill left."""
    import random

    rng, run = random.Random(0), tmp_path / "run"
    moments = [  # each gets the number of checkpoints there were when its process started
        lambda n: (run / "alignctl.yaml").exists(),
        lambda n: time.sleep(rng.uniform(0.0, 1.5)) or True,
        lambda n: _n_ckpts(run) >= 12,
        lambda n: _n_ckpts(run) > max(n, 25),  # a checkpoint of its own: it holds the lock
    ]
    for i, moment in enumerate(moments):
        cmd = _cli_run(tmp_path, "run") if i == 0 else _cli_resume(run)
        n = _n_ckpts(run) if run.exists() else 0
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_for(lambda moment=moment, n=n: moment(n), proc)
        if i == 3 and proc.poll() is None:  # frozen, it still holds the folder's lock
            proc.send_signal(signal.SIGSTOP)
            second = subprocess.run(_cli_resume(run), capture_output=True, text=True)
            assert second.returncode == 2 and "in use" in second.stderr
        proc.kill()
        _, err = proc.communicate(timeout=60)
        assert b"Traceback" not in err
    r = subprocess.run(_cli_resume(run), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    _assert_finished_like(run, cli_ref)


def test_failed_checkpoint_write_leaves_no_partial_file(tmp_path, monkeypatch):
    tr = _trainer(tmp_path / "r")
    tr.fit(2, save_every=1)
    before = sorted(p.name for p in (tmp_path / "r/checkpoints").glob("*.safetensors"))
    import alignctl.runs.atomic as atomic

    def broken_replace(src, dst):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(InputError, match="injected.*intact"):
        tr.fit(3, save_every=1)
    monkeypatch.undo()
    files = list((tmp_path / "r/checkpoints").rglob("*"))
    assert sorted(p.name for p in (tmp_path / "r/checkpoints").glob("*.safetensors")) == before
    assert not [p for p in files if ".tmp-" in p.name]
    resumed = _trainer(tmp_path / "r")
    resumed.restore()  # the last complete checkpoint
    assert resumed.epoch == 2


def test_run_directory_is_self_describing(tmp_path):
    runner = CliRunner()
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    assert (out / "alignctl.yaml").exists() and (out / "run.json").exists()
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary == json.loads((out / "run.json").read_text())
    assert summary["epochs_done"] == summary["epochs_completed"] == 6
    meta = json.loads(
        json.dumps(
            __import__("safetensors")
            .safe_open(str(sorted((out / "checkpoints").glob("*.safetensors"))[-1]), "pt")
            .metadata()
        )
    )
    for key in (
        "step",
        "epoch",
        "train_accuracy",
        "test_accuracy",
        "loss",
        "regularisers",
        "alignctl_version",
    ):
        assert key in meta
    # analyze reads the run with no further flags
    a = runner.invoke(app, ["analyze", str(out), "--json", "-"])
    assert a.exit_code == 0, a.stderr
    assert len(json.loads(a.stdout)["checkpoints"]) == len(
        list((out / "checkpoints").glob("*.safetensors"))
    )
    # refuses to overwrite without --force
    again = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(out), "--quiet"])
    assert again.exit_code == 2 and "--resume" in again.stderr and again.stdout == ""
    forced = runner.invoke(
        app, ["train", "--config", str(cfg), "--out", str(out), "--quiet", "--force"]
    )
    assert forced.exit_code == 0 and forced.stdout == "" and forced.stderr == ""  # --quiet


SMALL = {  # preset -> overrides that keep one epoch cheap (same code paths)
    "xor-cluster": {
        "data": {"dim": 500, "n_train": 40, "n_test": 40},
        "model": {"in_features": 500, "hidden": [32]},
    },
    "sparse-parity": {},
    "digits": {},
    "digits-grok": {},
    "digits-grok-mse": {},
    "modular-addition": {"data": {"p": 7}, "model": {"in_features": 14, "out_features": 7}},
    "modadd-transformer": {"data": {"p": 7}, "model": {"p": 7, "d_model": 16, "d_mlp": 32}},
}


@pytest.mark.parametrize("preset", PRESETS.names())
@pytest.mark.parametrize("reg", ["none", *REGULARISERS.names()])
def test_every_preset_trains_with_every_regulariser(preset, reg, tmp_path):
    d = PRESETS.get(preset)()
    if preset not in SMALL:
        pytest.skip(f"{preset} needs local data files")
    for section, extra in SMALL[preset].items():
        d[section].update(extra)
    d["train"]["epochs"] = 1
    if reg != "none":
        d["train"]["regularisers"] = [{"name": reg, **preset_reg_defaults(preset).get(reg, {})}]
    if reg == "adversarial" and preset == "modadd-transformer":  # tokens: no l_inf ball
        with pytest.raises(InputError, match="tokens"):
            _trainer(tmp_path / "r", d)
        return
    tr = _trainer(tmp_path / "r", d)
    summary = tr.fit(1, save_every=1)
    assert summary["epochs_done"] == 1
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())


@pytest.mark.parametrize(
    "change, args, fragment",
    [
        ({"model": {**TINY["model"], "in_features": 7}}, [], "cannot be applied"),
        (
            {
                "model": {**TINY["model"], "out_features": 1},
                "train": {**TINY["train"], "loss": "cross_entropy"},
            },
            [],
            "logistic",
        ),
        ({}, ["--reg", "bogus"], "bogus"),
        ({}, ["--reg", "grokalign:lambda"], "key=value"),
        ({}, ["--reg", "grokalign:n_proj=true"], "n_proj"),
        ({}, ["--save-schedule", "lin:3"], "log:K"),
    ],
)
def test_train_bad_input_is_one_line_exit_2(tmp_path, change, args, fragment):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, **change}))
    r = CliRunner().invoke(
        app, ["train", "--config", str(cfg), "--out", str(tmp_path / "o"), *args]
    )
    assert r.exit_code == 2, (r.stdout, r.stderr, r.exception)
    err = r.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "o" / "checkpoints").exists()  # nothing written before validation


def test_resume_drops_a_log_line_cut_short_by_a_kill(tmp_path):
    tr = _trainer(tmp_path / "r")
    tr.fit(2, save_every=1)
    log = tmp_path / "r" / "train_log.jsonl"
    with open(log, "a") as fh:
        fh.write('{"loss": 0.5, "train_acc')  # the kill came mid-write
    resumed = _trainer(tmp_path / "r")
    resumed.restore()
    resumed.fit(3, save_every=1)
    assert [json.loads(x)["epoch"] for x in log.read_text().splitlines()] == [0, 1, 2, 3]
