"""`alignctl train` under failure: runs that diverge (NaN/inf losses or weights), strict JSON,
resume from every state a kill can leave (before step 0, corrupt newest checkpoint), a full
disk, two writers into one folder, interrupts and the run.json counts."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from safetensors.torch import load_file
from typer.testing import CliRunner

from alignctl import Trainer
from alignctl.cli.assemble import app
from alignctl.runs.config import config_from_dict
from alignctl.train.jsonio import dumps_strict
from alignctl.train.lock import RunLock
from alignctl.train.race import table
from alignctl.train.regularisers import Regulariser

runner = CliRunner()
CFG = {
    "model": {"arch": "mlp", "in_features": 10, "hidden": [16], "out_features": 2},
    "data": {"task": "sparse-parity", "n": 120, "n_bits": 10, "k": 3, "seed": 0},
    "train": {"epochs": 4, "batch_size": 25, "loss": "cross_entropy", "seed": 0,
              "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1}},
    "grokked": {"test_acc": 0.9},
}  # fmt: skip
BPE = 3  # batches per epoch: 60 training samples (the task's half), batch 25


def _strict(text: str):
    """json.loads that refuses NaN and Infinity (what jq and browsers do)."""

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def _cfg(**train) -> dict:
    return {**CFG, "train": {**CFG["train"], **train}}


def _trainer(run: Path, cfg: dict = CFG, regs=()) -> Trainer:
    run.mkdir(parents=True, exist_ok=True)
    tr = Trainer(run, config_from_dict(cfg, run), "cpu")
    tr.regs += list(regs)  # test-only hooks, not registered (the registry drives other tests)
    return tr


def _last_weights(run: Path) -> dict:
    return load_file(str(sorted((run / "checkpoints").glob("step_*.safetensors"))[-1]))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _all_finite_on_disk(run: Path) -> bool:
    return all(
        all(torch.isfinite(t).all() for t in load_file(str(f)).values())
        for f in (run / "checkpoints").glob("step_*.safetensors")
    )


# --- ways to diverge -----------------------------------------------------------------------


class AtStep(Regulariser):
    """Does one bad thing at (1-based) step ``at``: ``what`` names it."""

    def __init__(self, what: str, at: int) -> None:
        self.what, self.at, self.n = what, at, 0

    def transform_batch(self, model, x, y, loss_fn):
        self.n += 1
        if self.what == "overflow" and self.n >= self.at:
            return x * 1e25  # outputs ~1e25: the squared error overflows float32 to inf
        return x

    def penalty(self, model, x, out, y):
        if self.n == self.at and self.what in ("nan_penalty", "inf_penalty"):
            return torch.tensor(math.nan if self.what == "nan_penalty" else math.inf)
        return None

    def after_backward(self, model) -> None:
        if self.n == self.at and self.what in ("nan_weight", "huge_weight"):
            with torch.no_grad():
                p = next(model.parameters())
                p[0, 0] = math.nan if self.what == "nan_weight" else 1e30


@pytest.mark.parametrize(
    ("what", "at", "loss", "step", "reason"),
    [
        ("nan_penalty", 6, "cross_entropy", 6, "training loss of step 6 is nan"),
        ("inf_penalty", 3, "cross_entropy", 3, "training loss of step 3 is inf"),
        ("overflow", 5, "mse", 5, "training loss of step 5 is inf"),
        # NaN written into a weight by the step itself: the loss of that step was finite
        ("nan_weight", 5, "cross_entropy", 6, "training loss of step 6 is nan"),
        # ... on the last step of an epoch: found in the weights at the epoch's evaluation
        ("nan_weight", 6, "cross_entropy", 6, "weight"),
        # finite but huge weights: no step loss is bad yet, the evaluation loss is inf
        ("huge_weight", 6, "mse", 6, "evaluation loss is inf"),
    ],
)
def test_a_diverged_run_stops_without_saving_non_finite_weights(
    tmp_path, what, at, loss, step, reason
):
    run = tmp_path / "r"
    tr = _trainer(run, _cfg(loss=loss), [AtStep(what, at)])
    summary = tr.fit(4, save_every=1)
    assert summary["status"] == "diverged" and summary["diverged"]
    assert summary["diverged_step"] == step and reason in summary["diverged_reason"]
    assert summary["train_accuracy"] is None and summary["test_accuracy"] is None
    assert tr.step < 4 * BPE  # it stopped
    assert summary["last_checkpoint_step"] == (at - 1) // BPE * BPE  # the last epoch end before
    assert _all_finite_on_disk(run)
    assert _strict((run / "run.json").read_text()) == summary
    for line in (run / "train_log.jsonl").read_text().splitlines():
        ev = _strict(line)
        assert ev["train_accuracy"] is None or math.isfinite(ev["loss"])


def test_non_finite_initial_weights_diverge_at_step_0(tmp_path):
    tr = _trainer(tmp_path / "r")
    with torch.no_grad():
        next(tr.model.parameters()).fill_(math.nan)
    summary = tr.fit(4)
    assert summary["diverged_step"] == 0 and summary["steps"] == 0
    assert summary["last_checkpoint_step"] is None
    assert not list((tmp_path / "r/checkpoints").glob("*.safetensors"))


def test_on_nan_continue_trains_on_with_null_accuracies_and_strict_json(tmp_path):
    run = tmp_path / "r"
    tr = _trainer(run, _cfg(on_nan="continue"), [AtStep("nan_weight", 5)])
    summary = tr.fit(4, save_every=1)
    assert summary["status"] == "diverged" and summary["diverged_step"] == 6
    assert summary["epochs_completed"] == 4 and summary["steps"] == 4 * BPE
    logs = [_strict(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in logs] == [0, 1, 2, 3, 4]
    assert logs[1]["loss"] is not None  # epoch 1 = steps 1..3, before the NaN weight
    for ev in logs[2:]:  # NaN weights: no loss, no accuracy, and never "grokked"
        assert ev["loss"] is None and ev["train_accuracy"] is None and not ev["grokked"]
        assert "NaN" in ev["nonfinite"]
    meta = (
        __import__("safetensors")
        .safe_open(str(run / "checkpoints/step_00000012.safetensors"), "pt")
        .metadata()
    )
    assert meta["loss"] == "null"  # strict JSON in the checkpoint's metadata too
    resumed = _trainer(run, _cfg(on_nan="continue"), [AtStep("nan_weight", 5)])
    resumed.restore()  # a resumed run still knows it diverged
    assert resumed.diverged["step"] == 6


def test_a_divergence_inside_a_long_epoch_stops_before_the_epoch_ends(tmp_path, monkeypatch):
    monkeypatch.setattr("alignctl.train.schedule.CHECK_EVERY", 2)
    tr = _trainer(tmp_path / "r", _cfg(batch_size=4), [AtStep("nan_penalty", 3)])  # 15 an epoch
    summary = tr.fit(2)
    assert summary["diverged_step"] == 3 and tr.step == 4 and summary["epochs_completed"] == 0


def test_the_cli_exits_3_with_one_line_and_strict_json(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_cfg(optimizer={"name": "sgd", "lr": 1e30})))
    out = tmp_path / "o"
    r = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(out), "--quiet"])
    assert r.exit_code == 3, (r.stdout, r.stderr)
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("error: the run diverged: ") and "step" in r.stderr
    summary = _strict((out / "run.json").read_text())
    assert summary["status"] == "diverged" and isinstance(summary["diverged_step"], int)
    assert _all_finite_on_disk(out)
    # --on-nan continue: trains every epoch, still says it diverged
    r = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(out), "--force",
                            "--on-nan", "continue"])  # fmt: skip
    assert r.exit_code == 3 and _strict(r.stdout.splitlines()[-1])["epochs_completed"] == 4
    assert yaml.safe_load((out / "alignctl.yaml").read_text())["train"]["on_nan"] == "continue"
    for line in (out / "train_log.jsonl").read_text().splitlines():
        _strict(line)


@pytest.mark.parametrize(
    ("args", "train", "fragment"),
    [(["--on-nan", "ignore"], {}, "--on-nan"), ([], {"on_nan": "skip"}, "on_nan")],
)
def test_a_bad_on_nan_is_one_line_exit_2(tmp_path, args, train, fragment):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_cfg(**train)))
    r = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and fragment in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_race_counts_a_diverged_pair_as_censored():
    res = {("none", 0): {"grokked_epoch": 50, "train_seconds": 1.0, "status": "finished"},
           ("ga", 0): {"grokked_epoch": 3, "train_seconds": 1.0, "status": "diverged"}}  # fmt: skip
    base, ga = table(res, ["none", "ga"], [0], max_epochs=200)
    assert ga["grokked"] == 0 and ga["diverged"] == 1 and ga["mean_epochs"] == 200
    assert ga["censored"] and ga["bound"] == "upper" and base["diverged"] == 0


def test_a_race_pair_that_diverges_is_recorded_and_censored(tmp_path):
    from alignctl.train.race import train_pair

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_cfg(optimizer={"name": "sgd", "lr": 1e30})))
    job = {"reg": "none", "seed": 0, "dir": str(tmp_path / "pair"), "task": None,
           "config": cfg, "max_epochs": 3, "device": "cpu", "threads": 1}  # fmt: skip
    summary = train_pair(job)  # in-process: the worker's code without a worker
    assert summary["status"] == "diverged" and summary["race_done"]
    assert _strict((tmp_path / "pair/run.json").read_text()) == summary
    (row,) = table({("none", 0): summary}, ["none"], [0], max_epochs=3)
    assert row["grokked"] == 0 and row["diverged"] == 1 and row["mean_epochs"] == 3


_json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids),
    max_leaves=20,
)


def _finite_or_none(obj):
    """The oracle: every non-finite float becomes None, nothing else changes (strings such as
    "NaN", keys included, are data, not numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    return obj


@given(_json_like)
@example({"NaN": None, "x": ["Infinity", float("nan"), -float("inf"), 1.5]})
def test_strict_json_never_writes_nan_and_keeps_finite_values(obj):
    text = dumps_strict(obj)
    back = _strict(text)
    assert back == _finite_or_none(obj)


# --- resume from every state a kill can leave --------------------------------------------


def _train_args(cfg: Path, out: Path, *extra) -> list[str]:
    return ["train", "--config", str(cfg), "--out", str(out), "--save-every", "1", "--quiet",
            "--device", "cpu", *extra]  # fmt: skip


def _resume_args(run: Path) -> list[str]:
    return ["train", "--resume", str(run), "--save-every", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> Path:
    """CFG trained to the end in one go (4 epochs, a checkpoint each)."""
    base = tmp_path_factory.mktemp("ref")
    (base / "c.yaml").write_text(yaml.safe_dump(CFG))
    r = runner.invoke(app, _train_args(base / "c.yaml", base / "run"))
    assert r.exit_code == 0, r.stderr
    return base / "run"


def _log_epochs(run: Path) -> list[int]:
    return [_strict(x)["epoch"] for x in (run / "train_log.jsonl").read_text().splitlines()]


def _assert_resumes_to(run: Path, ref: Path, note: str | None = None) -> None:
    r = runner.invoke(app, _resume_args(run))
    assert r.exit_code == 0, r.stderr
    if note is not None:
        assert note in r.stderr and r.stderr.startswith("note: ")
    assert _same(_last_weights(ref), _last_weights(run))
    assert _log_epochs(run) == [0, 1, 2, 3, 4]
    assert not list(run.rglob(".*.tmp-*"))


def _state_before_step_0(ref: Path, run: Path, files: str) -> None:
    """What a kill during run creation leaves: the writes in order are alignctl.yaml, the
    step-0 log line, the step-0 state, the step-0 weights (each through a temporary file)."""
    (run / "checkpoints/state").mkdir(parents=True)
    shutil.copy(ref / "alignctl.yaml", run / "alignctl.yaml")
    log = (ref / "train_log.jsonl").read_text().splitlines()[0] + "\n"
    if "log" in files:
        (run / "train_log.jsonl").write_text(log)
    if "cut" in files:
        (run / "train_log.jsonl").write_text(log[:17])
    if "state" in files:
        shutil.copy(ref / "checkpoints/state/step_00000000.pt", run / "checkpoints/state")
    if "tmp" in files:  # the weights' temporary file, half written
        blob = (ref / "checkpoints/step_00000000.safetensors").read_bytes()
        (run / "checkpoints/.step_00000000.safetensors.tmp-k1ll").write_bytes(blob[:100])


@pytest.mark.parametrize("files", ["config", "config+log", "config+cut", "config+log+state",
                                   "config+log+state+tmp"])  # fmt: skip
def test_a_run_killed_before_its_first_checkpoint_resumes(ref, tmp_path, files):
    run = tmp_path / "run"
    _state_before_step_0(ref, run, files)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CFG))
    again = runner.invoke(app, _train_args(tmp_path / "c.yaml", run))
    assert again.exit_code == 2 and "--resume" in again.stderr  # the same command says how
    _assert_resumes_to(run, ref, note="starting it at step 0")


def test_a_folder_killed_before_its_config_is_started_again(ref, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".alignctl.yaml.tmp-k1ll").write_text("model: {arch")
    r = runner.invoke(app, _resume_args(run))
    assert r.exit_code == 2 and "--out" in r.stderr and len(r.stderr.splitlines()) == 1
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CFG))
    assert runner.invoke(app, _train_args(tmp_path / "c.yaml", run)).exit_code == 0
    assert _same(_last_weights(ref), _last_weights(run)) and not list(run.glob(".*.tmp-*"))


def _corrupt(path: Path, how: str) -> None:
    blob = path.read_bytes()
    if how == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"\x00junk" * 50)
    elif how == "other model":
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(3)}, str(path))


@pytest.mark.parametrize(
    ("which", "how"),
    [("weights", "truncated"), ("weights", "empty"), ("weights", "other model"),
     ("state", "truncated"), ("state", "garbage")],
)  # fmt: skip
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(ref, tmp_path, which, how):
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    newest = "step_00000012"
    path = run / ("checkpoints/" if which == "weights" else "checkpoints/state/") / newest
    _corrupt(path.with_suffix(".safetensors" if which == "weights" else ".pt"), how)
    _assert_resumes_to(run, ref, note=f"{newest}.safetensors cannot be read")
    assert (run / f"checkpoints/.{newest}.safetensors.corrupt").exists()  # kept, hidden


def test_every_checkpoint_corrupt_starts_over_and_foreign_files_are_refused(ref, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    for f in (run / "checkpoints").glob("step_*.safetensors"):
        _corrupt(f, "truncated")
    _assert_resumes_to(run, ref, note="starting it at step 0")
    mine = tmp_path / "mine"  # a user's folder: their own checkpoints and an alignctl.yaml
    (mine / "checkpoints").mkdir(parents=True)
    shutil.copy(ref / "alignctl.yaml", mine)
    (mine / "checkpoints/model_5.pt").write_bytes(b"theirs")
    r = runner.invoke(app, _resume_args(mine))
    assert r.exit_code == 2 and "no resumable checkpoint" in r.stderr
    assert sorted(p.name for p in mine.rglob("*")) == ["alignctl.yaml", "checkpoints",
                                                       "model_5.pt"]  # fmt: skip


# --- a full disk --------------------------------------------------------------------------


def test_a_full_disk_is_one_line_exit_2_and_resume_works_after(ref, tmp_path, monkeypatch):
    import errno

    import alignctl.runs.atomic as atomic
    from alignctl.runs.writer import WRITER_FILE

    real, calls = os.replace, []

    def full_after_seven(src, dst):
        if Path(dst).name == WRITER_FILE:  # the lock holder's record: not the run's data
            return real(src, dst)
        calls.append(dst)
        if len(calls) > 7:  # the config, then 3 checkpoints (state + weights), then full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CFG))
    monkeypatch.setattr(atomic.os, "replace", full_after_seven)
    r = runner.invoke(app, _train_args(tmp_path / "c.yaml", tmp_path / "run"))
    monkeypatch.undo()
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "No space left on device" in r.stderr and "up to step 6 are intact" in r.stderr
    ckpts = sorted(p.name for p in (tmp_path / "run/checkpoints").glob("*.safetensors"))
    assert ckpts == ["step_00000000.safetensors", "step_00000003.safetensors",
                     "step_00000006.safetensors"]  # fmt: skip
    assert not list((tmp_path / "run").rglob(".*.tmp-*"))
    _assert_resumes_to(tmp_path / "run", ref)


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare") or sys.platform != "linux":
        return False
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d"
    return (
        subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True).returncode == 0
    )


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare and a tmpfs mount")
def test_a_real_full_disk_in_a_small_tmpfs(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CFG))
    train = " ".join(
        ["python", "-m", "alignctl", *_train_args(tmp_path / "c.yaml", Path("$d/run"))]
    )
    resume = " ".join(["python", "-m", "alignctl", *_resume_args(Path("$d/run")), "--quiet"])
    script = (f'd=$(mktemp -d) && mount -t tmpfs -o size=48k tmpfs "$d" || exit 99\n'
              f"{train} 2> {tmp_path}/err1; echo $? > {tmp_path}/rc1\n"
              f'mount -o remount,size=4m "$d"\n'
              f"{resume} 2> {tmp_path}/err2; echo $? > {tmp_path}/rc2\n"
              f'cp "$d/run/run.json" {tmp_path}/run.json\n')  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, timeout=300, check=True)
    err1 = (tmp_path / "err1").read_text()
    assert (tmp_path / "rc1").read_text().strip() == "2" and len(err1.splitlines()) == 1, err1
    assert err1.startswith("error: cannot write") and "intact" in err1
    assert (tmp_path / "rc2").read_text().strip() == "0", (tmp_path / "err2").read_text()
    summary = _strict((tmp_path / "run.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_completed"] == 4


# --- one writer per folder ------------------------------------------------------------------


def test_a_second_writer_is_refused_and_a_dead_ones_lock_does_not_block(ref, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CFG))
    with RunLock(run):  # another process's lock (flock is per open file: works in-process)
        for args in (_resume_args(run), _train_args(tmp_path / "c.yaml", run, "--force")):
            r = runner.invoke(app, args)
            assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
            assert "in use by another alignctl process" in r.stderr
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # nothing touched
    code = ("import os, sys; from alignctl.train.lock import RunLock; "
            "RunLock(sys.argv[1]).acquire(); os.kill(os.getpid(), 9)")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    died = subprocess.run([sys.executable, "-c", code, str(run)], env=env)
    assert died.returncode == -signal.SIGKILL
    assert runner.invoke(app, _resume_args(run)).exit_code == 0  # the kernel dropped its lock
    RunLock(run).acquire().release()  # and train released its own on exit


# --- interrupts and the run.json counts ---------------------------------------------------


@pytest.mark.parametrize(("batch_size", "stop_after"), [(25, 4), (25, 6), (25, 7), (None, 2)])
def test_interrupted_counts_agree_and_resume_is_exact(ref, tmp_path, batch_size, stop_after):
    cfg = _cfg(batch_size=batch_size)
    full = _trainer(tmp_path / "full", cfg).fit(4)
    part = _trainer(tmp_path / "part", cfg)
    steps = iter(range(1, 10**6))
    s = part.fit(4, should_stop=lambda: next(steps) == stop_after)
    bpe = s["batches_per_epoch"]
    assert s["status"] == "interrupted" and s["steps"] == stop_after
    assert s["steps"] == s["epochs_completed"] * bpe + s["batches_into_epoch"]
    assert s["epochs_done"] == s["epochs_completed"] and 0 <= s["batches_into_epoch"] < bpe
    assert s["last_checkpoint_step"] == stop_after
    resumed = _trainer(tmp_path / "part", cfg)
    resumed.restore()
    assert resumed.fit(4)["steps"] == full["steps"]
    assert _same(_last_weights(tmp_path / "full"), _last_weights(tmp_path / "part"))


def _finished_pairs(out: Path) -> list[Path]:
    done = []
    for p in out.rglob("run.json"):
        try:
            done += [p] if json.loads(p.read_text()).get("race_done") else []
        except ValueError:
            pass  # being replaced right now
    return done


def test_ctrl_c_in_race_exits_130_without_tracebacks(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CFG))
    out = tmp_path / "race"
    cmd = [sys.executable, "-m", "alignctl", "race", "--config", str(tmp_path / "c.yaml"),
           "--regs", "none,orthograd", "--seeds", "5", "--max-epochs", "10", "--out", str(out),
           "--quiet"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not _finished_pairs(out):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole group, workers too
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and b"Traceback" not in err, err
    assert err.decode().strip().splitlines()[-1].startswith("interrupted: ")
    assert _finished_pairs(out)  # kept: the next race skips them (tests/test_race.py)
