"""Local complexity (Humayun et al. 2024) as a candidate verdict signal on the verdict corpus
(benchmarks/verdict_corpus.py): does it tell memorising from generalised checkpoints?

    nice -n 10 python benchmarks/local_complexity_signal.py --corpus corpus/ [--samples 256]

For every corpus run whose network is piecewise linear (local complexity is refused for
smooth activations), every checkpoint's mean local complexity on ``--samples`` training
samples is measured (``alignctl.analyze(metrics="local_complexity")``), as a value and as a
ratio to the run's first checkpoint (runs differ in width and depth, so raw counts do not
transfer between them). The checkpoints whose truth (from measured accuracies) is memorising
or generalised are then compared: the area under the ROC curve of each form for "generalised"
(Mann-Whitney U / (n_m n_g); 0.5 = no signal, 1 or 0 = perfect separation in one direction),
pooled over runs, and per family. Prints measured numbers; decides nothing: a signal enters
the verdict only with a leave-one-family-out evaluation (benchmarks/verdict_agreement.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verdict_corpus import chance_of, truth_files, truth_label  # noqa: E402

from alignctl.errors import InputError  # noqa: E402
from alignctl.report.analysis import analyze  # noqa: E402
from alignctl.runs.run import open_run  # noqa: E402


def auc(positives: list[float], negatives: list[float]) -> float | None:
    """P(a positive's value > a negative's), ties counting one half; None if a side is empty."""
    if not positives or not negatives:
        return None
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(positives, negatives, alternative="two-sided").statistic
    return float(u) / (len(positives) * len(negatives))


def measure_run(folder: Path, samples: int) -> list[dict] | None:
    """[{family, truth, lc, ratio}] per checkpoint, or None for a smooth network."""
    truth = json.loads((folder / "truth.json").read_text())
    try:
        report = analyze(open_run(folder), samples=samples, device="cpu",
                         metrics="local_complexity", threads=1)  # fmt: skip
    except InputError as e:
        if "piecewise-linear" in str(e):
            return None
        raise
    chance = chance_of(truth["n_classes"])
    rows, first = [], None
    for ck in report["checkpoints"]:
        lc = (ck.get("metrics") or {}).get("local_complexity")
        if lc is None:
            continue
        first = lc if first is None else first
        label = truth_label(ck.get("train_accuracy"), ck.get("test_accuracy"), chance)
        rows.append({"family": truth["family"], "run": truth["name"], "truth": label, "lc": lc,
                     "ratio": lc / first if first else None})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--samples", type=int, default=256)
    args = ap.parse_args()
    rows, smooth = [], []
    for truth_file in truth_files(args.corpus):
        got = measure_run(truth_file.parent, args.samples)
        if got is None:
            smooth.append(truth_file.parent.name)
        else:
            rows += got
    print(f"{len({r['run'] for r in rows})} piecewise-linear runs measured; "
          f"{len(smooth)} smooth ones skipped ({', '.join(smooth)})")  # fmt: skip
    for form in ("lc", "ratio"):
        gen = [r[form] for r in rows if r["truth"] == "generalised" and r[form] is not None]
        mem = [r[form] for r in rows if r["truth"] == "memorising" and r[form] is not None]
        a = auc(gen, mem)
        print(f"{form}: {len(gen)} generalised vs {len(mem)} memorising checkpoints, "
              f"AUC for generalised {'-' if a is None else f'{a:.2f}'}")  # fmt: skip
    for family in sorted({r["family"] for r in rows}):
        fam = [r for r in rows if r["family"] == family]
        gen = [r["ratio"] for r in fam if r["truth"] == "generalised"]
        mem = [r["ratio"] for r in fam if r["truth"] == "memorising"]
        a = auc(gen, mem)
        if a is not None:
            print(f"  {family}: ratio AUC {a:.2f} ({len(gen)} vs {len(mem)})")


if __name__ == "__main__":
    main()
