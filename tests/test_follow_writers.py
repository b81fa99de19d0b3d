"""``analyze --follow`` knows whether anything still writes the run it watches (qa7): a monitor's
training process that dies ends the follow with a note, a monitor re-created in the same
process keeps the folder, and a run.json left from before (a run that ``train --resume`` is
starting to continue) is not taken for the end. Real processes throughout."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cache import make_run
from test_follow import TINY, cli
from typer.testing import CliRunner

import alignctl
from alignctl.cli.assemble import app
from alignctl.report.follow import RunWatcher
from alignctl.runs import writer
from alignctl.train.lock import RunLock

SRC = str(Path(__file__).resolve().parents[1] / "src")
LINUX = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")

LOOP = textwrap.dedent(
    """
    import sys, time, torch, alignctl
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x = torch.randn(32, 4)
    mon = alignctl.Monitor(net, x, (x[:, 0] > 0).long(), every=1, out=sys.argv[1])
    for step in range(3):
        mon.step(step)
    print("measured", flush=True)
    time.sleep(600)  # training on; killed before it closes the monitor
    """
)


def start_loop(out: Path) -> subprocess.Popen:
    """A process running LOOP's monitor on ``out``, returned once it has measured."""
    env = {**os.environ, "PYTHONPATH": SRC}
    loop = subprocess.Popen([sys.executable, "-c", LOOP, str(out)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert loop.stdout.readline().strip() == "measured", loop.stderr.read()
    return loop


def steps(out: str) -> list[int]:
    return [int(ln.split()[0][5:]) for ln in out.splitlines() if ln.startswith("step=")]


@LINUX
def test_a_monitor_whose_process_is_killed_ends_the_follow(tmp_path, monkeypatch):
    """qa7: a run written only by alignctl.Monitor (no folder lock) kept `analyze --follow`
    waiting forever once the training process died."""
    monkeypatch.setattr("alignctl.report.run_watcher.GONE_AFTER", 0.5)
    out = tmp_path / "m"
    loop = start_loop(out)
    try:
        assert RunWatcher(out, gone_after=0).finished() is False  # alive: however long
        threading.Timer(1.5, loop.send_signal, (signal.SIGKILL,)).start()  # kill -9 mid-run
        r = CliRunner().invoke(app, ["analyze", str(out), "--follow"])  # a zombie until reaped
    finally:
        loop.kill()
        loop.wait()
    assert r.exit_code == 0, r.stderr
    assert steps(r.stdout) == [0, 1, 2]
    assert "stopped without writing run.json" in r.stderr
    assert RunWatcher(out, gone_after=0).finished()  # reaped too


def test_a_monitor_recreated_in_the_same_process_keeps_the_folder(tmp_path):
    """A notebook cell run again: the second monitor takes the folder over; the first, closed
    later, neither writes run.json there (which would end the second's follow) nor lines."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x = torch.randn(16, 4)
    y = (x[:, 0] > 0).long()
    first = alignctl.Monitor(net, x, y, every=1, out=tmp_path / "m")
    first.step(0)
    second = alignctl.Monitor(net, x, y, every=1, out=tmp_path / "m", overwrite=True)
    second.step(0)
    watcher = RunWatcher(tmp_path / "m", gone_after=0)
    with pytest.raises(alignctl.errors.InputError, match="created after this one"):
        first.step(1)
    first.close()
    assert not (tmp_path / "m" / "run.json").exists() and not watcher.finished()
    second.step(1)
    second.close()
    assert watcher.finished() and watcher.note is None
    lines = (tmp_path / "m" / "alignment.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [0, 1]
    assert writer.read_record(tmp_path / "m") is None  # closed: no writer left behind
    third = alignctl.Monitor(net, x, y, every=1, out=tmp_path / "m", overwrite=True)
    assert writer.writer_alive(tmp_path / "m") in (True, None)  # None: no /proc here
    third.close()


def test_resume_and_follow_started_together(tmp_path, monkeypatch):
    """qa7: `train --resume R` and `analyze --follow R` started at the same instant: the
    follow read the old run.json (finished) before the resume removed it and exited at once,
    without the resumed checkpoints. The follow runs in this process with a GONE_AFTER longer
    than the resume can take to start: with the default 5 s, a resume starved for longer
    before it took the folder's lock (torch's import on a loaded machine) let the follow end
    on the old run.json, as documented, and the test failed by the machine's load."""
    monkeypatch.setattr("alignctl.report.run_watcher.GONE_AFTER", 120.0)
    run, cfg = tmp_path / "run", tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    first = cli("train", "--config", str(cfg), "--save-every", "3", "--out", str(run), "-q",
                "--device", "cpu")  # fmt: skip
    assert first.wait(timeout=240) == 0, first.stderr.read()
    report = tmp_path / "r.json"
    resume = cli("train", "--resume", str(run), "--epochs", "18", "-q", "--device", "cpu")
    try:
        r = CliRunner().invoke(app, ["analyze", str(run), "--follow", "--metrics", "fast",
                                     "--json", str(report)])  # fmt: skip
        _, err = resume.communicate(timeout=240)
    finally:
        resume.kill() if resume.poll() is None else None
    assert (resume.returncode, r.exit_code) == (0, 0), (err, r.stderr)
    assert json.loads((run / "run.json").read_text())["epochs_completed"] == 18
    assert [c["step"] for c in json.loads(report.read_text())["checkpoints"]][-1] == 18


def test_an_old_run_json_waits_out_a_resume_that_is_starting(tmp_path):
    """The same, step by step: an earlier run.json is believed only after GONE_AFTER seconds
    in which nothing took the lock or changed it."""
    run = make_run(tmp_path / "r", n_checkpoints=1)
    (run / "train_log.jsonl").write_text("{}\n")  # an alignctl train run
    (run / "run.json").write_text('{"interrupted": false}')
    now = [0.0]
    watcher = RunWatcher(run, clock=lambda: now[0], gone_after=5.0)
    assert not watcher.finished()  # the resume may not have started yet
    now[0] = 4.0
    with RunLock(run):  # ... it has: the lock first, then run.json removed
        assert not watcher.finished()
        (run / "run.json").unlink()
        for now[0] in (10.0, 100.0):
            assert not watcher.finished()
        (run / "run.json").write_text('{"interrupted": false, "epochs": 9}')
    assert watcher.finished() and watcher.note is None
    idle = RunWatcher(run, clock=lambda: now[0], gone_after=5.0)
    assert not idle.finished()
    now[0] = 105.0
    assert idle.finished()  # nobody came: the run is over


@LINUX
def test_an_interrupted_run_that_nothing_writes_ends_with_a_note(tmp_path, monkeypatch):
    """An interrupted run (Ctrl-C'd train) that no resume continues: the follow waited
    forever; now it ends once the lock has been free for GONE_AFTER seconds."""
    monkeypatch.setattr("alignctl.report.run_watcher.GONE_AFTER", 0.3)
    run = make_run(tmp_path / "r", n_checkpoints=2)
    (run / "train_log.jsonl").write_text("{}\n")
    (run / "run.json").write_text('{"status": "interrupted", "interrupted": true}')
    r = CliRunner().invoke(app, ["analyze", str(run), "--follow", "--metrics", "fast"])
    assert r.exit_code == 0, r.stderr
    assert steps(r.stdout) == [0, 1] and "interrupted and nothing is continuing it" in r.stderr


@LINUX
def test_writer_records_name_live_processes_only(tmp_path):
    me = writer.identity()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    cases = {
        "me": (me, True),
        "pid reused": ({**me, "start": me["start"] - 1}, False),
        "rebooted": ({**me, "boot": "another-boot"}, False),
        "ended": ({**me, "pid": child.pid}, False),
        "another host": ({**me, "host": socket.gethostname() + "-x"}, None),
    }
    for name, (record, want) in cases.items():
        (tmp_path / writer.WRITER_FILE).write_text(json.dumps(record))
        assert writer.writer_alive(tmp_path) is want, name


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)  # fmt: skip
# records of this host, so that liveness is really looked up
HERE = st.fixed_dictionaries(
    {"pid": st.integers(-5, 2**70) | JSON, "host": st.just(socket.gethostname())},
    optional={"start": st.integers(-5, 2**70) | JSON, "boot": JSON, "token": JSON},
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode())
       | HERE.map(lambda v: json.dumps(v).encode()))  # fmt: skip
def test_any_writer_file_reads_as_a_record_or_none(tmp_path_factory, blob):
    """The record is read from a folder anyone can write: whatever it holds, the answer is a
    record with a positive integer pid or None, and liveness True/False/None, never an error."""
    folder = tmp_path_factory.mktemp("w")
    (folder / writer.WRITER_FILE).write_bytes(blob)
    rec = writer.read_record(folder)
    assert rec is None or (type(rec["pid"]) is int and rec["pid"] > 0)
    assert writer.writer_alive(folder) in (True, False, None)


def test_a_monitor_closed_by_an_exception_is_over_once_nothing_writes(tmp_path, monkeypatch):
    """A monitor's run.json saying interrupted (the loop raised inside `with Monitor(...)`)
    kept a later follow waiting for a resume that monitors do not have."""
    monkeypatch.setattr("alignctl.report.run_watcher.GONE_AFTER", 0.3)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x = torch.randn(16, 4)
    with pytest.raises(KeyboardInterrupt):
        with alignctl.Monitor(net, x, (x[:, 0] > 0).long(), every=1, out=tmp_path / "m") as mon:
            mon.step(0)
            mon.step(1)
            raise KeyboardInterrupt
    assert json.loads((tmp_path / "m" / "run.json").read_text())["interrupted"] is True
    r = CliRunner().invoke(app, ["analyze", str(tmp_path / "m"), "--follow"])
    assert r.exit_code == 0, r.stderr
    assert steps(r.stdout) == [0, 1] and "was interrupted" in r.stderr


HOLDER = textwrap.dedent(
    """
    import sys, time
    from alignctl.train.lock import RunLock
    RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(600)  # a trainer at work; killed with the lock held
    """
)


@LINUX
def test_a_killed_trainer_is_gone_where_the_lock_cannot_be_read(tmp_path, monkeypatch):
    """qa7's remaining case: on btrfs subvolumes and overlayfs ``lock_held`` cannot tell (None),
    so a killed `alignctl train` kept the follow waiting forever. The lock's holder also keeps
    a writer record; released cleanly, it leaves nothing behind."""
    run = make_run(tmp_path / "r", n_checkpoints=1)
    (run / "train_log.jsonl").write_text("{}\n")  # an `alignctl train` run
    before = sorted(p.name for p in run.iterdir())
    RunLock(run).acquire().release()
    assert sorted(p.name for p in run.iterdir()) == before  # no record left by a clean exit
    monkeypatch.setattr("alignctl.train.lock.lock_held", lambda folder: None)  # btrfs-like
    env = {**os.environ, "PYTHONPATH": SRC}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        assert not RunWatcher(run, gone_after=0).finished()  # alive, however long
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        watcher = RunWatcher(run, gone_after=0)
        assert watcher.finished() and "without writing run.json" in watcher.note
    finally:
        holder.kill()
        holder.wait()
