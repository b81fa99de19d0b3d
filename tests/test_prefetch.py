"""Prefetching the next checkpoint: asks the kernel for files and folders, never fails, and
analyze asks for each checkpoint after the first while measuring the one before."""

import os

import pytest

from alignctl.runs.checkpoints import prefetch as pf


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise here")
def test_files_folders_and_what_cannot_be_read(tmp_path):
    f = tmp_path / "a.safetensors"
    f.write_bytes(b"x" * 4096)
    folder = tmp_path / "hf"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"y")
    (folder / "sub" / "config.json").write_text("{}")
    assert pf.prefetch(f) == 1 and pf.prefetch(folder) == 2
    assert pf.prefetch(tmp_path / "missing") == 0
    os.mkfifo(tmp_path / "pipe")  # never blocks: opened non-blocking, advice refused quietly
    assert pf.prefetch(tmp_path / "pipe") == 0


def test_analyze_prefetches_every_later_checkpoint(tmp_path, monkeypatch):
    from test_cache import make_run

    import alignctl

    run = make_run(tmp_path / "r", n_checkpoints=3)
    asked = []
    monkeypatch.setattr(pf, "prefetch", lambda p: asked.append(os.path.basename(p)) or 1)
    alignctl.analyze(alignctl.open_run(run), metrics="fast", device="cpu")
    assert asked == ["step_00000001.safetensors", "step_00000002.safetensors"]
