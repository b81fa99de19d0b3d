"""``alignctl analyze --follow``: a run written by ``alignctl train`` in another process, each
checkpoint analysed once as it lands (and only once complete), monitor logs followed, the end
of the run detected from run.json, Ctrl-C exits 130."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_cache import add_checkpoint, make_run
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.report.cache import Cache
from alignctl.report.follow import RunWatcher, follow_run

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = {
    "model": {"arch": "mlp", "in_features": 40, "hidden": [16], "out_features": 2},
    "data": {"task": "sparse-parity", "n": 200, "n_bits": 40, "k": 3, "train_fraction": 0.5},
    "train": {"epochs": 12, "optimizer": {"name": "adamw", "lr": 0.01}},
}


def cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": SRC, "NO_COLOR": "1"}
    return subprocess.Popen([sys.executable, "-m", "alignctl", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # fmt: skip


def test_follow_a_run_that_alignctl_train_writes(tmp_path):
    out, cfg = tmp_path / "run", tmp_path / "tiny.yaml"
    out.mkdir()
    cfg.write_text(yaml.safe_dump(TINY))
    report_file = tmp_path / "r.json"
    follow = cli("analyze", str(out), "--follow", "--metrics", "fast", "--json", str(report_file))
    train = cli("train", "--config", str(cfg), "--save-every", "3", "--out", str(out), "-q",
                "--device", "cpu")  # fmt: skip
    try:
        _, train_err = train.communicate(timeout=240)
        assert train.returncode == 0, train_err
        stdout, stderr = follow.communicate(timeout=120)  # ends by itself: run.json appeared
    finally:
        for p in (train, follow):
            p.kill() if p.poll() is None else None
    assert follow.returncode == 0, stderr
    lines = [ln for ln in stdout.splitlines() if ln.startswith("step=")]
    assert [int(ln.split()[0][5:]) for ln in lines] == [0, 3, 6, 9, 12]  # one line each
    report = json.loads(report_file.read_text())
    assert [c["step"] for c in report["checkpoints"]] == [0, 3, 6, 9, 12]
    assert report["cache"]["hits"] + report["cache"]["misses"] == 5  # the last pass
    assert report["cache"]["misses"] >= 1  # ... measured only what had not been measured


def test_each_checkpoint_is_analysed_once_as_it_lands(tmp_path):
    import alignctl

    run = make_run(tmp_path / "r", n_checkpoints=1)
    cache, passes = Cache(None), []

    def analyse(r):
        return alignctl.analyze(r, cache=cache)

    def on_report(report):  # the writer reacts to each report: live, never in one final pass
        passes.append([c["step"] for c in report["checkpoints"]])
        n = len(passes)
        if n < 4:
            add_checkpoint(run, n)
        else:
            (run / "run.json").write_text('{"interrupted": false}')

    final = follow_run(run, open_run=lambda: alignctl.open_run(run), analyse=analyse,
                       on_report=on_report, poll=0.05, timeout=60)  # fmt: skip
    assert passes == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3]]
    assert cache.misses == 4  # every checkpoint measured exactly once
    assert final["checkpoints"][-1]["step"] == 3


def test_a_foreign_file_is_taken_only_once_complete(tmp_path):
    clock = [0.0]
    run = make_run(tmp_path / "r", n_checkpoints=1)
    watcher = RunWatcher(run, settle=1.0, clock=lambda: clock[0])
    assert [r.step for r in watcher.ready()] == [0]  # alignctl's own: complete once visible
    blob = tmp_path / "whole.pt"
    torch.save({"0.weight": torch.zeros(12, 5)}, blob)  # a torch file: no alignctl metadata
    data = blob.read_bytes()
    target = run / "checkpoints" / "step_00000005.pt"
    target.write_bytes(data[: len(data) // 2])  # another tool, half-way through writing
    for t in (0.0, 0.5, 2.0, 5.0):
        clock[0] = t
        assert [r.step for r in watcher.ready()] == [0], t  # stable but unreadable: not yet
    target.write_bytes(data)
    clock[0] = 5.5
    assert [r.step for r in watcher.ready()] == [0]  # just changed: wait until it settles
    clock[0] = 7.0
    assert [r.step for r in watcher.ready()] == [0, 5]


def test_follow_a_monitor_log(tmp_path):
    import alignctl

    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x = torch.randn(32, 4)
    y = (x[:, 0] > 0).long()
    mon = alignctl.Monitor(net, x, y, every=1, out=tmp_path / "m")
    seen = []

    def write():
        for step in range(3):
            time.sleep(0.2)
            mon.step(step)
        mon.close()

    writer = threading.Thread(target=write)
    writer.start()
    report = follow_run(tmp_path / "m", open_run=None, analyse=None, timeout=60, poll=0.05,
                        on_report=lambda r: seen.append(len(r["checkpoints"])))  # fmt: skip
    writer.join()
    assert [c["step"] for c in report["checkpoints"]] == [0, 1, 2]
    assert seen[-1] == 3 and seen == sorted(seen)


def test_a_finished_run_is_analysed_and_followed_no_further(tmp_path, monkeypatch):
    monkeypatch.setattr("alignctl.report.run_watcher.GONE_AFTER", 0.3)  # no resume is coming
    run = make_run(tmp_path / "r", n_checkpoints=2)
    (run / "run.json").write_text('{"interrupted": false}')
    r = CliRunner().invoke(app, ["analyze", str(run), "--follow", "--metrics", "fast"])
    assert r.exit_code == 0, r.stderr
    assert sum(ln.startswith("step=") for ln in r.stdout.splitlines()) == 2
    assert "recommendation" in r.stdout  # then the usual table and panel


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_exits_130(tmp_path):
    run = make_run(tmp_path / "r", n_checkpoints=1)  # no run.json: would follow forever
    p = cli("analyze", str(run), "--follow", "--metrics", "fast")
    try:
        first = p.stdout.readline()  # the loop is running once the first line is out
        assert first.startswith("step=0"), p.stderr.read() if p.poll() is not None else first
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=60)
    finally:
        p.kill() if p.poll() is None else None
    assert p.returncode == 130


def test_follow_waits_for_a_run_folder_that_training_has_not_made_yet(tmp_path, monkeypatch):
    """`alignctl train --out R & alignctl analyze --follow R`: training needs a moment (torch
    imports) before R exists; --follow waits for it instead of failing; a path that is a file
    is still an error at once."""
    monkeypatch.setattr("alignctl.report.run_watcher.GONE_AFTER", 0.3)
    staged = make_run(tmp_path / "staged", n_checkpoints=2)
    (staged / "run.json").write_text('{"interrupted": false}')
    target = tmp_path / "later" / "run"

    def appear():
        time.sleep(1.0)
        target.parent.mkdir()
        staged.rename(target)

    threading.Thread(target=appear, daemon=True).start()
    r = CliRunner().invoke(app, ["analyze", str(target), "--follow", "--metrics", "fast"])
    assert r.exit_code == 0, r.stderr
    assert sum(ln.startswith("step=") for ln in r.stdout.splitlines()) == 2
    (tmp_path / "file").write_text("x")
    r = CliRunner().invoke(app, ["analyze", str(tmp_path / "file"), "--follow"])
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and "not one" in r.stderr


def test_a_resumed_run_is_not_finished_until_it_ends(tmp_path):
    """qa4: `train --resume R --epochs more` left the old run.json (status finished) in place
    while it trained, so `analyze --follow R` started meanwhile stopped at once."""
    from alignctl.runs.config import config_from_dict
    from alignctl.train.lock import RunLock
    from alignctl.train.trainer import Trainer

    run = tmp_path / "r"
    run.mkdir()
    Trainer(run, config_from_dict(TINY, run), "cpu").fit(2)
    assert RunWatcher(run, gone_after=0).finished()  # finished, nobody training it
    with RunLock(run):  # as `alignctl train --resume` holds it
        resumed = Trainer(run, config_from_dict(TINY, run), "cpu")
        resumed.restore()
        seen = []

        def during(_event):  # at each evaluation of the resumed run: follow starting now
            seen.append((run / "run.json").exists() or RunWatcher(run, gone_after=0).finished())

        summary = resumed.fit(4, callback=during)
    assert seen and not any(seen)
    assert summary["status"] == "finished" and RunWatcher(run, gone_after=0).finished()
    assert json.loads((run / "run.json").read_text())["epochs_completed"] == 4


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads the lock from /proc/locks")
def test_a_trainer_killed_before_run_json_ends_the_follow(tmp_path, monkeypatch):
    """qa4: `alignctl train` stopped by SIGTERM, kill -9 or the OOM killer never writes
    run.json, and `analyze --follow` waited for it forever. Its folder lock (held from the
    first write to the last) tells a live trainer from a dead one."""
    from alignctl.train.lock import RunLock

    run = make_run(tmp_path / "r", n_checkpoints=2)
    (run / "train_log.jsonl").write_text("{}\n")  # written by alignctl train, under its lock
    now = [0.0]
    lock = RunLock(run).acquire()
    try:
        watcher = RunWatcher(run, clock=lambda: now[0], gone_after=5.0)
        for now[0] in (0.0, 10.0, 20.0):
            assert not watcher.finished()  # a live trainer: however long it takes
    finally:
        lock.release()
    assert not watcher.finished()  # free for a moment: a resume takes it at its start
    now[0] = 26.0
    assert watcher.finished() and watcher.gone
    monkeypatch.setattr("alignctl.report.run_watcher.GONE_AFTER", 0.3)
    r = CliRunner().invoke(app, ["analyze", str(run), "--follow", "--metrics", "fast"])
    assert r.exit_code == 0, r.stderr
    assert sum(ln.startswith("step=") for ln in r.stdout.splitlines()) == 2
    assert "without writing run.json" in r.stderr


def test_lock_held_says_unknown_where_proc_locks_names_files_otherwise(tmp_path, monkeypatch):
    """On btrfs subvolumes and overlayfs /proc/locks can name a file by other device numbers
    than stat gives: a live trainer's lock would be missed and --follow would stop 5 s into
    its run. "Free" is said only after a probe lock shows up under the predicted name."""
    from alignctl.train import lock as lk

    run = make_run(tmp_path / "r", n_checkpoints=1)
    assert lk.lock_held(run) is False
    held = lk.RunLock(run).acquire()
    try:
        assert lk.lock_held(run) is True
    finally:
        held.release()
    real = lk._ident
    monkeypatch.setattr(lk, "_ident", lambda p: "ff:ff:" + real(p).rsplit(":", 1)[1])
    assert lk.lock_held(run) is None  # the probe lock is not found under its predicted name
    (run / "train_log.jsonl").write_text("{}\n")
    now = [0.0]
    watcher = RunWatcher(run, clock=lambda: now[0], gone_after=1.0)
    for now[0] in (0.0, 10.0, 100.0):
        assert not watcher.finished()  # unknown is never "gone"
