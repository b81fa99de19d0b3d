"""Checkpoints that a writer rewrites in place while ``analyze`` reads them (runs/checkpoints/
stable.py), and a run folder whose ``checkpoints`` entry is not a folder (qa8).

A read during which the file changed (its size, mtime, ctime or inode moved) is done again;
a file that changes on every read is one error line; the cache never stores numbers under the
key of bytes it did not measure (a rewrite between keying and loading). The rewrites here set
an explicit later mtime: file timestamps move in coarse ticks (~4 ms), and a rewrite within
one tick cannot be seen from outside (atomic writers avoid it; alignctl's own are)."""

import json
import os
import shutil

import pytest
import torch
from test_cache import MODEL, make_run
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.runs.checkpoints import write_checkpoint
from alignctl.runs.models import build_model
from alignctl.runs.run import Run

runner = CliRunner()


def rewrite(path, seed: int, later_ns: int) -> None:
    """Rewrite ``path`` in place (same name and inode) with other weights, mtime moved on."""
    tmp = path.with_name("other.bin")
    torch.manual_seed(seed)
    write_checkpoint(tmp, build_model(MODEL, path.parent).state_dict(), {"step": 1})
    data = tmp.read_bytes()
    tmp.unlink()
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + later_ns))


def report(path, *extra):
    r = runner.invoke(app, ["analyze", str(path), "--metrics", "fast", "--json", "-", *extra])
    assert r.exit_code == 0, r.stderr
    return [
        {k: v for k, v in c.items() if k != "seconds"} for c in json.loads(r.stdout)["checkpoints"]
    ]


def during_reads(monkeypatch, path, times: int):
    """The first ``times`` reads of ``path`` rewrite it while they read it."""
    real, count = Run._read_into, [0]

    def read_into(self, model, ref):
        out = real(self, model, ref)
        if ref.path == path and count[0] < times:
            count[0] += 1
            rewrite(path, seed=100 + count[0], later_ns=10**9 * count[0])
        return out

    monkeypatch.setattr(Run, "_read_into", read_into)
    return count


def test_a_checkpoint_rewritten_during_its_read_is_read_again(tmp_path, monkeypatch):
    run = make_run(tmp_path / "r", n_checkpoints=2)
    path = run / "checkpoints" / "step_00000001.safetensors"
    count = during_reads(monkeypatch, path, times=1)
    got = report(run, "--no-cache")
    assert count[0] == 1
    monkeypatch.undo()
    assert got == report(run, "--no-cache")  # the numbers of the bytes now on disk


def test_a_checkpoint_changing_on_every_read_is_one_error_line(tmp_path, monkeypatch):
    run = make_run(tmp_path / "r", n_checkpoints=2)
    path = run / "checkpoints" / "step_00000001.safetensors"
    during_reads(monkeypatch, path, times=100)
    r = runner.invoke(app, ["analyze", str(run), "--metrics", "fast", "--no-cache"])
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "step_00000001.safetensors changed while it was read" in err, err


def test_the_cache_keeps_no_numbers_under_the_key_of_bytes_it_did_not_measure(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("ALIGNCTL_CACHE", raising=False)
    run = make_run(tmp_path / "r", n_checkpoints=2)
    path = run / "checkpoints" / "step_00000001.safetensors"
    old = path.read_bytes()
    real = Run.load_checkpoint

    def load(self, model, ref, notes=None):  # keyed on the old bytes, loads the new ones
        if ref.path == path and path.read_bytes() == old:
            rewrite(path, seed=7, later_ns=10**9)
        return real(self, model, ref, notes)

    monkeypatch.setattr(Run, "load_checkpoint", load)
    report(run)
    monkeypatch.undo()
    path.write_bytes(old)  # the old bytes again: their numbers, not the rewrite's
    assert report(run) == report(run, "--no-cache")


@pytest.mark.parametrize("what", ["a file", "a broken link", "a FIFO"])
def test_a_checkpoints_entry_that_is_not_a_folder_is_named(tmp_path, what):
    run = make_run(tmp_path / "r", n_checkpoints=1)
    ck = run / "checkpoints"
    shutil.move(ck / "step_00000000.safetensors", tmp_path / "w.safetensors")
    ck.rmdir()
    if what == "a file":
        shutil.copyfile(tmp_path / "w.safetensors", ck)
    elif what == "a broken link":
        ck.symlink_to(tmp_path / "nowhere")
    else:
        os.mkfifo(ck)
    r = runner.invoke(app, ["analyze", str(run), "--no-cache"])
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert f"checkpoints is {what}" in err and "not a folder of checkpoints" in err, err


def test_checkpoints_beside_the_config_with_a_stray_checkpoints_file_still_work(tmp_path):
    run = make_run(tmp_path / "r", n_checkpoints=2)
    for p in (run / "checkpoints").iterdir():
        p.rename(run / p.name)
    (run / "checkpoints").rmdir()
    (run / "checkpoints").write_text("notes")
    assert [c["step"] for c in report(run, "--no-cache")] == [0, 1]
