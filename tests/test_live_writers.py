"""qa11: the writer record (.alignctl-writer.json) that alignctl.Monitor and `alignctl train`'s
lock both write, against the folder takeovers that replace a run: `Monitor(overwrite=True)`
and `train --force` never take a folder that another live process writes, nor delete files
alignctl did not write (qa10's rule for --force, now also the Monitor's); a writer killed
with its record left behind does not stop either."""

from __future__ import annotations

import hashlib
import shutil
import signal
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from test_follow_writers import LINUX, start_loop
from test_foreign_folders import FOREIGN, TINY
from typer.testing import CliRunner

import alignctl
from alignctl.cli.assemble import app
from alignctl.errors import InputError
from alignctl.runs import writer

runner = CliRunner()


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _monitor(out: Path, **kw) -> alignctl.Monitor:
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x = torch.randn(16, 4)
    return alignctl.Monitor(net, x, (x[:, 0] > 0).long(), every=1, out=out, **kw)


@pytest.mark.parametrize("layout", list(FOREIGN))
def test_monitor_overwrite_never_deletes_files_alignctl_did_not_write(tmp_path, layout):
    """overwrite=True deleted a user's checkpoints/ folder (their model.pt) and run.json, the
    files `train --force` was taught to keep (qa10); without it the error asked for it."""
    out = tmp_path / "out"
    for name, data in {**FOREIGN[layout], "notes.txt": b"mine"}.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    before = _tree(out)
    foreign = any(k.startswith("checkpoints/") or k == "run.json" and b"alignctl_version" not in v
                  for k, v in FOREIGN[layout].items())  # fmt: skip
    for overwrite in (False, True):
        if foreign:
            with pytest.raises(InputError, match="did not write|alignctl train|overwrite="):
                _monitor(out, overwrite=overwrite)
            assert _tree(out) == before
    if not foreign:  # alignctl's own files: replaced (a train log: refused, as before)
        try:
            _monitor(out, overwrite=True).close()
        except InputError as e:
            assert "alignctl train" in str(e) and _tree(out) == before
        assert (out / "notes.txt").read_bytes() == b"mine"


def test_monitor_checkpoints_past_step_1e8_stay_its_own(tmp_path):
    """step_XXXXXXXX has 9 digits from step 10**8 (a loop counting samples): such a checkpoint
    was 'a file alignctl did not write', and --resume skipped a trainer's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no model_config: analyze would need --model
        mon = _monitor(tmp_path / "m", save_checkpoints=True)
        mon.step(123_456_789)
        mon.close()
        assert (tmp_path / "m" / "checkpoints" / "step_123456789.safetensors").is_file()
        _monitor(tmp_path / "m", save_checkpoints=True, overwrite=True).close()


@LINUX
def test_a_live_monitor_of_another_process_is_never_taken_over(tmp_path):
    """A second process's Monitor(overwrite=True) or `train --force` into the folder deleted
    the live monitor's log (its training then failed at its next step: 'written by a Monitor
    created after this one'); the train lock overwrote its record. Once that process is
    killed (its record left behind), both take the folder."""
    out = tmp_path / "m"
    loop = start_loop(out)
    try:
        before = _tree(out)
        for overwrite in (False, True):  # without it: 'already holds a run', as before
            with pytest.raises(InputError, match=f"written by process {loop.pid}|overwrite="):
                _monitor(out, overwrite=overwrite)
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(TINY))
        args = ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(out), "-q"]
        r = runner.invoke(app, [*args, "--force"])
        assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.output
        assert "written by process" in r.stderr
        assert _tree(out) == before
    finally:
        loop.send_signal(signal.SIGKILL)
        loop.wait()
    assert writer.writer_alive(out) is False  # the record stays behind a killed writer
    shutil.copytree(out, tmp_path / "copy")
    _monitor(out, overwrite=True).close()
    args[args.index(str(out))] = str(tmp_path / "copy")
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    assert writer.read_record(tmp_path / "copy") is None  # released with the lock
