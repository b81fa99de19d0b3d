"""Squared error on digits: when does the baseline fit the training data, and when does its
test accuracy pass 80%? The figures behind the ``digits-grok-mse`` preset and its README
section.

Two modes:

    # train the baseline (no regulariser) of the digits MSE protocol with a changed
    # training-set size / init scale, one line per setting
    python benchmarks/digits_mse_protocol.py train --setting 256:4 --setting 1437:8 \
        --epochs 4000 --seed 0

    # read a finished race folder (alignctl race --task digits-grok-mse --out DIR)
    python benchmarks/digits_mse_protocol.py race DIR

Per run it prints the epoch at which training accuracy first reaches 99% ("fit"), the test
accuracy then, the epoch at which test accuracy first passes 80% (the grokked criterion; "-"
if never) and the last test accuracy. Training is the real :class:`alignctl.train.Trainer`
on the ``digits-grok-mse`` preset with ``data.n_train`` and ``model.init_scale`` replaced,
so ``256:4`` is the preset itself and ``1437:8`` is the paper's protocol (the ``digits``
preset) with squared error. One CPU thread; a 1437-sample run takes minutes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

FIT, GROK = 0.99, 0.80


def summarise(log: list[dict]) -> dict:
    """fit epoch, test accuracy at fit, first epoch with test > 80%, last test accuracy."""
    fit = next((e for e in log if (e.get("train_accuracy") or 0) >= FIT), None)
    grok = next((e for e in log if (e.get("test_accuracy") or 0) > GROK), None)
    last = log[-1] if log else {}
    return {
        "fit_epoch": fit["epoch"] if fit else None,
        "test_at_fit": round(fit["test_accuracy"], 3) if fit else None,
        "test_over_80_epoch": grok["epoch"] if grok else None,
        "last_epoch": last.get("epoch"),
        "last_test": round(last["test_accuracy"], 3) if last.get("test_accuracy") else None,
    }


def line(name: str, s: dict, seconds: float | None = None) -> str:
    def cell(v):
        return "-" if v is None else str(v)

    out = (f"{name:<24} fit {cell(s['fit_epoch']):>5} (test {cell(s['test_at_fit'])})  "
           f"test>80% {cell(s['test_over_80_epoch']):>5}  "
           f"last test {cell(s['last_test'])} at {cell(s['last_epoch'])}")  # fmt: skip
    return out + (f"  {seconds:.0f} s" if seconds is not None else "")


def train(setting: str, epochs: int, seed: int) -> tuple[dict, float]:
    import torch

    from alignctl.runs.config import config_from_dict
    from alignctl.train.presets import PRESETS
    from alignctl.train.trainer import Trainer

    n_train, scale = setting.split(":")
    d = PRESETS.get("digits-grok-mse")()
    d["data"].update(n_train=int(n_train), seed=seed)
    d["model"]["init_scale"] = float(scale)
    d["train"].update(seed=seed, epochs=epochs)
    torch.set_num_threads(1)
    log: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(Path(tmp), config_from_dict(d, Path.cwd(), source=setting), "cpu")
        t0 = time.perf_counter()
        tr.fit(epochs, save_every=epochs, stop_when_grokked=True, callback=log.append)
        return summarise(log), time.perf_counter() - t0


def race(folder: Path) -> None:
    for log_file in sorted(folder.glob("*/seed_*/train_log.jsonl")):
        log = [json.loads(x) for x in log_file.read_text().splitlines() if x.strip()]
        print(line(f"{log_file.parent.parent.name}/{log_file.parent.name}", summarise(log)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("train")
    t.add_argument("--setting", action="append", default=None, help="N_TRAIN:INIT_SCALE")
    t.add_argument("--epochs", type=int, default=4000)
    t.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("race")
    r.add_argument("folder", type=Path)
    a = p.parse_args()
    if a.mode == "race":
        race(a.folder)
        return
    for setting in a.setting or ["256:4"]:
        s, seconds = train(setting, a.epochs, a.seed)
        print(line(f"n_train:init {setting} s{a.seed}", s, seconds), flush=True)


if __name__ == "__main__":
    main()
