"""Checkpoints that change under ``analyze --follow`` and the cache (qa7): rewritten in place
under the same name (Lightning's ``last.ckpt``), removed while being read (a trainer keeping
only its last checkpoints), copied over with their mtime kept. The numbers are always those of
the bytes on disk, as a fresh uncached analyze gives them."""

import json
import os
import shutil
import threading
import time

import pytest
import torch
from test_cache import MODEL, add_checkpoint, make_run
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.report.analysis import analyze
from alignctl.report.cache import Cache
from alignctl.report.follow import follow_run
from alignctl.runs.models import build_model
from alignctl.runs.run import open_run

runner = CliRunner()


def fresh(run, tmp_path):
    out = tmp_path / "fresh.json"
    r = runner.invoke(app, ["analyze", str(run), "--metrics", "fast", "--no-cache", "-q",
                            "--json", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    return json.loads(out.read_text())["checkpoints"]


def test_a_checkpoint_rewritten_in_place_is_analysed_again(tmp_path, monkeypatch):
    """qa7: a checkpoint torch.save'd again under its name while --follow ran kept its first
    numbers in the live table and the final report (a fresh analyze disagreed)."""
    monkeypatch.setattr("alignctl.report.run_watcher.GONE_AFTER", 0.3)
    run = make_run(tmp_path / "r", n_checkpoints=1)
    last = run / "checkpoints" / "step_00000005.pt"

    def save(seed):
        torch.manual_seed(seed)
        torch.save(build_model(MODEL, run).state_dict(), last)  # in place, not atomic

    save(100)

    def train_on():
        time.sleep(2.0)  # the first version analysed by now
        save(200)
        time.sleep(1.5)
        (run / "run.json").write_text('{"interrupted": false}')

    threading.Thread(target=train_on).start()
    out = tmp_path / "follow.json"
    r = runner.invoke(app, ["analyze", str(run), "--follow", "--metrics", "fast", "-q",
                            "--json", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    followed = json.loads(out.read_text())["checkpoints"]
    want = fresh(run, tmp_path)
    assert [c["metrics"] for c in followed] == [c["metrics"] for c in want]


def test_a_checkpoint_removed_while_read_does_not_end_the_follow(tmp_path):
    """A rotation removing a checkpoint between discovery and reading made --follow stop with
    an error (with the cache: a FileNotFoundError traceback)."""
    run = make_run(tmp_path / "r", n_checkpoints=3)
    (run / "run.json").write_text('{"interrupted": false}')
    doomed = run / "checkpoints" / "step_00000001.safetensors"
    cache, calls = Cache(None), []

    def analyse(r):
        calls.append([ref.step for ref in r.checkpoints])
        if doomed.exists():
            doomed.unlink()  # removed after discovery, before it is read
        return analyze(r, metrics="fast", cache=cache)

    report = follow_run(run, open_run=lambda: open_run(run), analyse=analyse,
                        on_report=lambda r: None, poll=0.05, timeout=30)  # fmt: skip
    assert calls[0] == [0, 1, 2] and calls[-1] == [0, 2]
    assert [c["step"] for c in report["checkpoints"]] == [0, 2]


def test_a_removed_checkpoint_is_one_error_line_with_the_cache(tmp_path):
    run = make_run(tmp_path / "r", n_checkpoints=2)
    opened = open_run(run)
    (run / "checkpoints" / "step_00000001.safetensors").unlink()
    from alignctl.errors import InputError

    try:
        analyze(opened, metrics="fast", cache=Cache(tmp_path / "c"))
    except InputError as e:
        assert "step_00000001" in str(e)
    else:
        raise AssertionError("no error for a removed checkpoint")


def test_a_copy_that_keeps_size_and_mtime_is_measured_again(tmp_path):
    """`cp -p` / `rsync -t` of another checkpoint over one: same name, size and mtime. The
    in-process digest memo (keyed on size and mtime) returned the old file's digest, so the
    cache gave the old numbers for the new bytes."""
    run = make_run(tmp_path / "r", n_checkpoints=2)
    cache = Cache(None)
    first = analyze(open_run(run), metrics="fast", cache=cache)
    a, b = (run / "checkpoints" / f"step_{s:08d}.safetensors" for s in (0, 1))
    st = a.stat()
    other = add_checkpoint(tmp_path / "elsewhere", 0, seed=77)
    assert other.stat().st_size == st.st_size
    shutil.copyfile(other, a)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime kept
    again = analyze(open_run(run), metrics="fast", cache=cache)
    assert again["cache"]["misses"] == 1
    assert again["checkpoints"][0]["metrics"] != first["checkpoints"][0]["metrics"]
    assert again["checkpoints"][0]["metrics"] == fresh(run, tmp_path)[0]["metrics"]
    assert b.exists()


def test_cache_dir_and_no_cache_together_are_an_error(tmp_path):
    """Both given: --no-cache won silently, so the DIR asked for stayed empty."""
    run = make_run(tmp_path / "r", n_checkpoints=1)
    r = runner.invoke(app, ["analyze", str(run), "--cache", str(tmp_path / "c"), "--no-cache"])
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and "contradict" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


def test_a_run_folder_removed_while_followed_ends_with_one_error_line(tmp_path, monkeypatch):
    """qa7: `rm -rf RUN` (or `mv RUN`) during --follow left it waiting forever."""
    from alignctl.report.run_watcher import RunWatcher

    monkeypatch.setattr("alignctl.report.run_watcher.GONE_AFTER", 0.3)
    run = make_run(tmp_path / "r", n_checkpoints=1)
    finished = RunWatcher.finished

    def removed_once_watched(self):  # not on a timer: a starved follow may start after it
        if run.exists():
            shutil.rmtree(run)
        return finished(self)

    monkeypatch.setattr(RunWatcher, "finished", removed_once_watched)
    r = runner.invoke(app, ["analyze", str(run), "--follow", "--metrics", "fast"])
    assert r.exit_code == 2, r.stderr
    assert r.stderr.strip() == f"error: {run} was removed or moved while it was followed"


def test_follow_of_a_monitor_log_refuses_what_the_log_cannot_give(tmp_path):
    """qa7: `analyze LOGDIR --split test` is an error (the log was measured on the probe), but
    with --follow the option was silently ignored and the probe's numbers reported."""
    import alignctl

    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x = torch.randn(16, 4)
    with alignctl.Monitor(net, x, (x[:, 0] > 0).long(), every=1, out=tmp_path / "m") as mon:
        mon.step(0)
    for extra in (["--split", "test"], ["--metrics", "jacobian_alignment"], ["--samples", "4"]):
        r = runner.invoke(app, ["analyze", str(tmp_path / "m"), "--follow", *extra])
        assert r.exit_code == 2 and r.stderr.startswith("error: "), (extra, r.stderr)
        assert "cannot apply" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = runner.invoke(app, ["analyze", str(tmp_path / "m"), "--follow", "--metrics", "fast"])
    assert r.exit_code == 0, r.stderr


@pytest.mark.parametrize("kind", ["file", "broken link"])
def test_a_checkpoints_entry_that_is_no_folder_ends_the_follow(tmp_path, kind):
    """qa8: `analyze --follow` on a run whose checkpoints entry is a file (or a broken link)
    waited forever: nothing can land there. One error line, exit 2, the entry untouched."""
    run = tmp_path / "r"
    run.mkdir()
    (run / "train_log.jsonl").write_text("{}\n")
    entry = run / "checkpoints"
    if kind == "file":
        entry.write_text("not a folder")
    else:
        entry.symlink_to(tmp_path / "nowhere")
    r = CliRunner().invoke(app, ["analyze", str(run), "--follow"])
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "not a folder" in lines[0]
    assert os.path.lexists(entry) and (kind != "file" or entry.read_text() == "not a folder")
