"""Held-out checkpoint layouts of issue 11 (qa12): timm's CheckpointSaver and PyTorch's
ImageNet example name their torch.save files ``checkpoint-N.pth.tar``, ``model_best.pth.tar``
and ``last.pth.tar`` (they were "no checkpoint files")."""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch
import yaml
from typer.testing import CliRunner

from alignctl.cli.assemble import app
from alignctl.runs.checkpoints import discover_checkpoints

MODEL = {"arch": "mlp", "in_features": 4, "hidden": [8], "out_features": 3}


def _state(seed: int) -> dict:
    from alignctl.runs.models import build_model

    torch.manual_seed(seed)
    return build_model(MODEL, None).state_dict()


def _timm_run(root):
    root.mkdir()
    g = torch.Generator().manual_seed(0)
    np.savez(root / "data.npz", x_train=torch.randn(9, 4, generator=g).numpy(),
             y_train=(torch.arange(9) % 3).numpy())  # fmt: skip
    (root / "alignctl.yaml").write_text(
        yaml.safe_dump({"model": MODEL, "data": {"path": "data.npz"}})
    )
    ck = root / "checkpoints"
    ck.mkdir()
    for epoch in range(3):
        torch.save({"epoch": epoch, "arch": "mlp", "state_dict": _state(epoch),
                    "state_dict_ema": _state(10 + epoch), "version": 2},
                   ck / f"checkpoint-{epoch}.pth.tar")  # fmt: skip
    shutil.copy(ck / "checkpoint-1.pth.tar", ck / "model_best.pth.tar")
    shutil.copy(ck / "checkpoint-2.pth.tar", ck / "last.pth.tar")
    (ck / "args.yaml").write_text("model: mlp\n")
    return root


def _analyze(*args) -> dict:
    r = CliRunner().invoke(app, ["analyze", *map(str, args), "--json", "-", "--metrics", "fast",
                                 "--no-cache"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def test_pth_tar_checkpoints_are_found_named_and_deduplicated(tmp_path):
    run = _timm_run(tmp_path / "run")
    refs = discover_checkpoints(run / "checkpoints")
    assert [(r.name, r.step) for r in refs] == [(f"checkpoint-{i}", i) for i in range(3)]
    report = _analyze(run)
    assert [c["name"] for c in report["checkpoints"]] == [f"checkpoint-{i}" for i in range(3)]
    notes = " | ".join(report["notes"])
    assert "left out model_best.pth.tar" in notes and "left out last.pth.tar" in notes
    ema = _analyze(run, "--weights", "ema")
    assert ema["checkpoints"][0]["metrics"] != report["checkpoints"][0]["metrics"]
    one = _analyze(run / "checkpoints" / "model_best.pth.tar")
    assert one["checkpoints"][0]["metrics"] == report["checkpoints"][1]["metrics"]
