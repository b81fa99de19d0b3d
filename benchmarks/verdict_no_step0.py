"""The inferred verdict's stand-in start (alignctl.report.reference) checked on the verdict
corpus: every run analysed twice, with its step-0 checkpoint and without it (then a fresh
seeded initialisation of the model stands in), both judged without a test split by the shipped
defaults. The stand-in is right when it decides the same way and is no less right.

    nice -n 10 python benchmarks/verdict_corpus.py --out corpus/        # build (cached)
    nice -n 10 python benchmarks/verdict_no_step0.py --corpus corpus/

The shipped thresholds were fitted on this corpus, so the "with step 0" figures are in-sample;
what this measures is how much replacing the run's own initialisation changes them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verdict_corpus import chance_of, truth_label  # noqa: E402

from alignctl import analyze, open_run  # noqa: E402
from alignctl.report.recommend import recorded_train  # noqa: E402
from alignctl.report.verdict import judge, thresholds  # noqa: E402

SAY = {"generalising": "generalised", "robust": "generalised"}


def blind(report: dict, n_classes: int, loss: str | None = None) -> list[str]:
    t, out = thresholds(None), []
    for ck in report["checkpoints"]:
        e = {**ck, "test_accuracy": None}
        e.update(judge(e, n_classes=n_classes, grokked=None, t=t, history=out,
                       reference=report.get("reference"), loss=loss))  # fmt: skip
        out.append(e)
    return [e["verdict"] for e in out]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=Path("corpus"))
    ap.add_argument("--samples", type=int, default=256)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    tally = {"step 0": Counter(), "stand-in": Counter()}
    for truth_file in sorted(args.corpus.glob("*/truth.json")):
        folder, truth = truth_file.parent, json.loads(truth_file.read_text())
        run = open_run(folder)
        reports = {}
        for label, name in (("step 0", "step0-report.json"), ("stand-in", "nostep0-report.json")):
            cache = folder / name
            if not cache.exists():
                refs = [r for r in run.checkpoints if label == "step 0" or r.step != 0]
                sub = dataclasses.replace(run, checkpoints=refs)
                cache.write_text(json.dumps(analyze(sub, samples=args.samples, device="cpu")))
            reports[label] = json.loads(cache.read_text())
        chance = chance_of(truth["n_classes"])
        loss = (recorded_train(run.config) or {}).get("loss")  # as analyze reads it
        said = {k: dict(zip([c["step"] for c in r["checkpoints"]],
                            blind(r, truth["n_classes"], loss), strict=True))
                for k, r in reports.items()}  # fmt: skip
        line = []
        for ck in reports["stand-in"]["checkpoints"]:
            tr = truth_label(ck["train_accuracy"], ck["test_accuracy"], chance)
            if tr not in ("memorising", "generalised"):
                continue
            for k in tally:
                v = SAY.get(said[k][ck["step"]], said[k][ck["step"]])
                decided = v in ("memorising", "generalised")
                tally[k]["fitted"] += 1
                tally[k]["decided"] += decided
                tally[k]["right"] += decided and v == tr
            line.append(f"{said['step 0'][ck['step']][:3]}/{said['stand-in'][ck['step']][:3]}")
        print(f"{truth['name']:<28} step0/stand-in: {' '.join(line)}")
    for k, c in tally.items():
        print(f"{k:<9} fitted {c['fitted']}, decided {c['decided']} "
              f"({c['decided'] / max(c['fitted'], 1):.0%}), right {c['right']} "
              f"({c['right'] / max(c['decided'], 1):.0%} where it decides)")  # fmt: skip


if __name__ == "__main__":
    main()
