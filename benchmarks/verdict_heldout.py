"""The verdict and recommendation on held-out runs (benchmarks/heldout_runs.py): families, a
training loop (Lightning and Hugging Face Trainers), checkpoint spacing (linear, step 0 only on
some runs) and data that the verdict corpus never had; alignctl's shipped defaults, untouched.

    nice -n 10 python benchmarks/verdict_heldout.py --out heldout/        # build + measure
    python benchmarks/verdict_heldout.py --out heldout/ --only bars255-cnn-adam

Each run is built once (``truth.json`` marks it done) and analysed once with its test split
(``report.json`` beside it; ``--fresh`` measures again). Truth per checkpoint is the issue's
(benchmarks/verdict_corpus.truth_label, from accuracies this script measures itself at each
save). Printed: without a test split (the test accuracy hidden, verdicts judged again in step
order): coverage and accuracy over the fitted checkpoints; with a test split: right on every
unambiguous checkpoint?; the recommendation against each run's ``accept``, both ways.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from heldout_runs import DATA, RUNS  # noqa: E402
from verdict_corpus import chance_of, truth_label  # noqa: E402

SAY = {"generalising": "generalised", "robust": "generalised"}


def _factory():
    ns: dict = {}
    exec(compile((HERE / "heldout_models.py").read_text(), "heldout_models.py", "exec"), ns)
    return ns["make_net"]


def _loss(kind, out, y):
    import torch.nn.functional as F

    if kind == "softmse":  # squared error against label-smoothed targets
        c = out.shape[1]
        soft = F.one_hot(y, c).to(out) * 0.9 + 0.1 / c
        return (out - soft).pow(2).sum(1).mean()
    return F.cross_entropy(out, y)


def _accuracy(net, x, y) -> float:
    import torch

    was = net.training
    net.eval()
    with torch.no_grad():
        out = net(x)
    net.train(was)
    if not torch.isfinite(out).all():
        return float("nan")
    return float((out.argmax(1) == y).float().mean())


def _optimiser(spec, params):
    import torch

    if spec["opt"] == "sgd":
        opt = torch.optim.SGD(params, lr=spec["lr"], momentum=spec["momentum"],
                              weight_decay=spec["wd"])  # fmt: skip
    elif spec["opt"] == "adamw":
        opt = torch.optim.AdamW(params, lr=spec["lr"], weight_decay=spec["wd"])
    else:
        opt = torch.optim.Adam(params, lr=spec["lr"])  # no weight decay at all
    sched = {
        None: None,
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, spec["steps"]),
        "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(opt, spec["lr"], spec["steps"] + 1),
    }[spec["sched"]]
    return opt, (sched() if sched else None)


def train_lightning(spec, t, folder: Path) -> list[dict]:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    rows: list[dict] = []

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(spec["seed"])
            self.net = _factory()(**spec["model"])

        def training_step(self, batch, i):
            return _loss(spec["loss"], self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            opt, sched = _optimiser(spec, self.parameters())
            if sched is None:
                return opt
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def record(net, step):
        rows.append({"step": step, "train": _accuracy(net, t["x_train"], t["y_train"]),
                     "test": _accuracy(net, t["x_test"], t["y_test"])})  # fmt: skip

    class Recorder(Callback):
        def on_train_start(self, trainer, lit):
            if spec["step0"]:  # Lightning never writes step 0 itself
                trainer.save_checkpoint(folder / "checkpoints" / "epoch=0-step=0.ckpt")
                record(lit.net, 0)

        def on_train_batch_end(self, trainer, lit, *a):
            if trainer.global_step % spec["every"] == 0:
                record(lit.net, trainer.global_step)

    ckpt = ModelCheckpoint(dirpath=folder / "checkpoints", every_n_train_steps=spec["every"],
                           save_top_k=-1, filename="{epoch}-{step}")  # fmt: skip
    n = len(t["x_train"])
    gen = torch.Generator().manual_seed(spec["seed"])
    loader = DataLoader(TensorDataset(t["x_train"], t["y_train"]), shuffle=True,
                        batch_size=spec["batch"] or n, generator=gen)  # fmt: skip
    trainer = L.Trainer(max_steps=spec["steps"], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1,
                        callbacks=[ckpt, Recorder()], default_root_dir=folder,
                        num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(Lit(), loader)
    return rows


def train_hf(spec, t, folder: Path) -> list[dict]:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(spec["seed"])
            self.net = _factory()(**spec["model"])

        def forward(self, x, labels=None):
            logits = self.net(x)
            return {"loss": _loss(spec["loss"], logits, labels), "logits": logits}

    rows: list[dict] = []

    class Recorder(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step % spec["every"] == 0:
                rows.append({"step": state.global_step,
                             "train": _accuracy(model.net, t["x_train"], t["y_train"]),
                             "test": _accuracy(model.net, t["x_test"], t["y_test"])})  # fmt: skip

    data = [{"x": x, "labels": y} for x, y in zip(t["x_train"], t["y_train"], strict=True)]
    args = TrainingArguments(output_dir=str(folder / "checkpoints"), max_steps=spec["steps"],
                             save_steps=spec["every"], learning_rate=spec["lr"],
                             lr_scheduler_type=spec["sched"] or "constant",
                             per_device_train_batch_size=spec["batch"], report_to=[],
                             use_cpu=True, logging_strategy="no", disable_tqdm=True,
                             seed=spec["seed"], save_only_model=True)  # fmt: skip
    Trainer(model=Wrap(), args=args, train_dataset=data, callbacks=[Recorder()]).train()
    return rows


def build(spec: dict, out: Path) -> dict:
    folder = out / spec["name"]
    done = folder / "truth.json"
    if done.exists():
        return json.loads(done.read_text())
    import torch
    import yaml

    torch.set_num_threads(1)
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "checkpoints").mkdir(parents=True)
    kw = dict(spec["data_kw"])
    arrays, n_classes, input_range = DATA[spec["data"]](kw.pop("seed", spec["seed"]), **kw)
    np.savez(folder / "data.npz", **arrays)
    shutil.copy(HERE / "heldout_models.py", folder / "models.py")
    data_cfg = {"path": "data.npz", "num_classes": n_classes}
    if input_range:
        data_cfg["input_range"] = input_range
    cfg = {"model": {"factory": "models.py:make_net", "kwargs": spec["model"]}, "data": data_cfg}
    (folder / "alignctl.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    t = {k: torch.as_tensor(v) for k, v in arrays.items()}
    t0 = time.perf_counter()
    rows = (train_hf if spec["loop"] == "hf" else train_lightning)(spec, t, folder)
    for r in rows:
        r["truth"] = truth_label(r["train"], r["test"], chance_of(n_classes))
    truth = {k: spec[k] for k in ("name", "family", "loop", "accept", "step0")}
    truth.update(n_classes=n_classes, seconds=round(time.perf_counter() - t0, 1), checkpoints=rows)
    done.write_text(json.dumps(truth, indent=1))
    return truth


def measure(folder: Path, fresh: bool) -> dict:
    from alignctl import analyze, open_run

    cache = folder / "report.json"
    if fresh or not cache.exists():
        cache.write_text(json.dumps(analyze(open_run(folder), samples=256, device="cpu")))
    return json.loads(cache.read_text())


def judged(report: dict, n_classes: int, hide_test: bool) -> list[dict]:
    """The report's entries judged again, in step order, by the current rules (defaults)."""
    from alignctl.report.verdict import judge, thresholds

    t, out = thresholds(None), []
    for ck in report["checkpoints"]:
        e = {**ck, **({"test_accuracy": None} if hide_test else {})}
        ref = report.get("reference")
        e.update(judge(e, n_classes=n_classes, grokked=None, t=t, history=out, reference=ref))
        out.append(e)
    return out


def main(argv=None) -> None:
    from alignctl.report.recommend import recommend
    from alignctl.report.verdict import thresholds

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("heldout"))
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--fresh", action="store_true", help="measure again (not train)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    specs = [s for s in RUNS if not args.only or s["name"] in args.only]
    blind_pairs, test_pairs, rec_ok, rec_ok_blind = [], [], 0, 0
    right = decided = fitted = 0
    for spec in specs:
        truth = build(spec, args.out)
        report = measure(args.out / spec["name"], args.fresh)
        by_step = {r["step"]: r for r in truth["checkpoints"]}
        c = truth["n_classes"]
        with_test, blind = judged(report, c, False), judged(report, c, True)
        line = []
        for w, b in zip(with_test, blind, strict=True):
            tr = by_step[w["step"]]["truth"]
            test_pairs.append((tr, w["verdict"]))
            blind_pairs.append((tr, b["verdict"]))
            line.append(f"{w['step']}:{tr[:3]}/{b['verdict'][:3]}")
            if tr in ("memorising", "generalised"):
                fitted += 1
                said = SAY.get(b["verdict"], b["verdict"])
                if said in ("memorising", "generalised"):
                    decided += 1
                    right += said == tr
        t = thresholds(None)
        rec = recommend(with_test, t, n_classes=c)
        rec_b = recommend(blind, t, n_classes=c)
        a, b = rec["action"] in spec["accept"], rec_b["action"] in spec["accept"]
        rec_ok, rec_ok_blind = rec_ok + a, rec_ok_blind + b
        traj = " ".join(f"{r['train']:.2f}/{r['test']:.2f}" for r in truth["checkpoints"])
        print(f"\n{spec['name']} ({spec['loop']}, step0 {spec['step0']}, {truth['seconds']}s)"
              f"\n  train/test {traj}\n  truth/blind {' '.join(line)}"
              f"\n  test split: {rec['action']} {'right' if a else 'WRONG'} -- {rec['reason']}"
              f"\n  without:    {rec_b['action']} {'right' if b else 'wrong'}"
              f"  (accept {'/'.join(spec['accept'])})")  # fmt: skip
    unamb = [(tr, v) for tr, v in test_pairs if tr != "ambiguous"]
    ok = sum(SAY.get(v, v) == tr for tr, v in unamb)
    print(f"\n== {len(specs)} runs, {len(test_pairs)} checkpoints")
    print(f"with a test split: right on {ok} of {len(unamb)} unambiguous checkpoints")
    for (tr, v), k in sorted(Counter(unamb).items()):
        print(f"  truth {tr:<12} verdict {v:<13} {k}")
    print(f"without a test split: fitted {fitted}, decided {decided} "
          f"(coverage {decided / max(fitted, 1):.0%}), right {right} "
          f"({right / max(decided, 1):.0%} where it decides)")  # fmt: skip
    for (tr, v), k in sorted(Counter(blind_pairs).items()):
        print(f"  truth {tr:<12} verdict {v:<13} {k}")
    print(f"recommendation right: with a test split {rec_ok} of {len(specs)} runs; "
          f"without {rec_ok_blind} of {len(specs)}")  # fmt: skip


if __name__ == "__main__":
    main()
