"""Candidate signals for the verdict without a test split, each judged the way the shipped rule
is (benchmarks/verdict_agreement.py): added to it, leave-one-family-out on the verdict corpus.

    nice -n 10 python benchmarks/verdict_signals.py --corpus corpus/

For every candidate, the shipped rule (``settle``, ``growth``, ``no_gain``: report/evidence.py)
plus one more reading ("feature >= or <= threshold reads X"); all thresholds fitted jointly on
the other families (right - COST * wrong over verdict_agreement's grid and the candidate's,
then MARGIN grid steps toward caution), scored on the held-out family. Coverage = decided /
fitted checkpoints; accuracy = right / decided. Features read only the checkpoint and the ones
before it (no look-ahead). Prints measured numbers; decides nothing: a candidate enters the
verdict only if it raises coverage clearly at >= 95% accuracy here, and then on held-out runs.

Then, for runs whose truth turns from memorising to generalised (grokking), the features at
the last memorising and the first generalised checkpoint: what any threshold would have to
separate.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verdict_agreement import COST, GRID, MARGIN, load  # noqa: E402

from alignctl.report.evidence import signals  # noqa: E402

FIT = 0.98  # alignctl.report.verdict.DEFAULTS["fit"]


def _log_ratio(a, b):
    ok = a is not None and b is not None and a > 0 and b > 0
    return math.log(a / b) if ok and math.isfinite(a / b) else None


def features(cks: list[dict], i: int, n_classes: int) -> dict:
    """The features of checkpoint i from entries 0..i (the shipped signals from evidence.py)."""
    ck, hist = cks[i], cks[: i + 1]
    f = signals(ck, cks[:i], fit=FIT)
    m, m0 = ck["metrics"] or {}, cks[0]["metrics"] or {}
    first = next(j for j, h in enumerate(hist) if (h["train_accuracy"] or 0) >= FIT)
    mf = hist[first]["metrics"] or {}
    f["settle"] = ck["step"] / max(hist[first]["step"], 1)
    f["label_alignment"] = m.get("centred_label_alignment")
    la, la_f = m.get("centred_label_alignment"), mf.get("centred_label_alignment")
    f["label_rise_since_fit"] = la - la_f if la is not None and la_f is not None else None
    f["gain_since_fit"] = _log_ratio(m.get("centred_alignment_full"),
                                     mf.get("centred_alignment_full"))  # fmt: skip
    f["erank_change"] = _log_ratio(m.get("jacobian_erank"), m0.get("jacobian_erank"))
    # fit tail: a lower bound on (first fitted step) / (first step half-way above chance)
    chance = 0.5 if n_classes <= 2 else 1 / n_classes
    half = next((j for j, h in enumerate(hist)
                 if (h["train_accuracy"] or 0) >= chance + (1 - chance) / 2), None)  # fmt: skip
    ok = half is not None and first > 0 and hist[half]["step"] > 0
    f["fit_tail"] = hist[first - 1]["step"] / hist[half]["step"] if ok else None
    return f


# name: (feature, op, reads (+1 generalising, -1 memorising), grid (most cautious first), why)
CANDIDATES = {
    "alignment gain high": ("alignment_gain", ">=", 1, [99, 2, 1.5, 1, 0.75, 0.5, 0.25, 0],
                            "the Jacobian turned toward the inputs"),
    "label alignment high": ("label_alignment", ">=", 1, [99, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2],
                             "the label row's first-order margin is large"),
    "label alignment low": ("label_alignment", "<=", -1, [-99, 0.02, 0.05, 0.1, 0.15, 0.2],
                            "labels fitted without a margin along the input"),
    "label rise since fit": ("label_rise_since_fit", ">=", 1,
                             [99, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05],
                             "the margin keeps growing after fitting (grokking's cleanup)"),
    "gain fall since fit": ("gain_since_fit", "<=", -1, [-99, -1.5, -1, -0.75, -0.5, -0.25],
                            "the Jacobian turns away from the inputs after fitting"),
    "norm growth very high": ("norm_growth", ">=", -1, [99, 7, 6, 5.5, 5, 4.5, 4, 3.5, 3],
                              "very steep slopes"),
    "effective rank drop": ("erank_change", "<=", 1, [-99, -0.6, -0.4, -0.3, -0.2],
                            "fewer output directions used"),
    "fit tail long": ("fit_tail", ">=", 1, [99, 16, 12, 10, 8, 6, 5, 4, 3],
                      "structured data is fitted easy examples first (Arpit et al. 2017)"),
}  # fmt: skip
SHIPPED = [("settle", ">=", 0, GRID["settle"]), ("norm_growth", "<=", 1, GRID["growth"]),
           ("alignment_gain", "<=", -1, GRID["no_gain"])]  # fmt: skip


def _decide(cols: dict, rules: list, values: tuple) -> np.ndarray:
    """+1 generalising, -1 memorising, 0 uncertain (no reading, or readings that disagree)."""
    n = len(cols["truth"])
    gen, mem, gate = np.zeros(n, bool), np.zeros(n, bool), np.ones(n, bool)
    for (feat, op, reads, _), t in zip(rules, values, strict=True):
        x = cols[feat]
        fire = ~np.isnan(x) & ((x >= t) if op == ">=" else (x <= t))
        if reads == 0:
            gate &= fire
        elif reads == 1:
            gen |= fire
        else:
            mem |= fire
    return np.where(gate & gen & ~mem, 1, np.where(gate & mem & ~gen, -1, 0))


def _fit(cols: dict, rules: list, margin: int) -> tuple:
    best, best_v = None, None
    for values in itertools.product(*(r[3] for r in rules)):
        d = _decide(cols, rules, values)
        v = (d == cols["truth"]).sum() - COST * ((d != 0) & (d != cols["truth"])).sum()
        if best is None or v > best:
            best, best_v = v, values
    return tuple(r[3][max(0, r[3].index(v) - margin)] for r, v in zip(rules, best_v, strict=True))


def lofo(rows: list[dict], rules: list, margin: int) -> tuple[int, int, int]:
    """(right, wrong, fitted) over the families, each judged with thresholds fitted on the
    others."""
    keys = {r[0] for r in rules} | {"truth"}
    fams = np.array([r["family"] for r in rows])
    right = wrong = 0
    for fam in sorted(set(fams)):
        cols = {k: np.array([np.nan if r.get(k) is None else r[k] for r in rows], float)
                for k in keys}  # fmt: skip
        train = {k: v[fams != fam] for k, v in cols.items()}
        held = {k: v[fams == fam] for k, v in cols.items()}
        d = _decide(held, rules, _fit(train, rules, margin))
        right += int((d == held["truth"]).sum())
        wrong += int(((d != 0) & (d != held["truth"])).sum())
    return right, wrong, len(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=Path("corpus"))
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--margin", type=int, default=MARGIN, help="grid steps toward caution")
    args = ap.parse_args()
    runs = load(args.corpus, args.samples, False)
    rows, per_run = [], []
    for run in runs:
        cks, tr = run["report"]["checkpoints"], run["truth"]
        feats = [features(cks, i, tr["n_classes"]) if ck["truth"] in ("memorising",
                 "generalised") else None for i, ck in enumerate(cks)]  # fmt: skip
        for ck, f in zip(cks, feats, strict=True):
            if f is not None:
                rows.append({**f, "family": tr["family"],
                             "truth": 1.0 if ck["truth"] == "generalised" else -1.0})  # fmt: skip
        per_run.append((tr["name"], cks, feats))
    print(f"fitted checkpoints {len(rows)} in {len({r['family'] for r in rows})} families; "
          f"leave-one-family-out, margin {args.margin} grid step")  # fmt: skip
    print(f"  {'rule':<38}{'decided':>9}{'coverage':>10}{'right':>7}{'accuracy':>10}")
    for name, extra in [("shipped rule alone", [])] + [
        (f"+ {k}", [c[:4]]) for k, c in CANDIDATES.items()
    ]:
        r_, w_, n = lofo(rows, SHIPPED + extra, args.margin)
        print(f"  {name:<38}{r_ + w_:>9}{(r_ + w_) / max(n, 1):>10.0%}{r_:>7}"
              f"{r_ / max(r_ + w_, 1):>10.0%}")  # fmt: skip
    print("\n== grokking runs: the features at the last memorising / first generalised checkpoint")
    shown = ["norm_growth", "alignment_gain", "label_alignment", "erank_change"]
    print(f"  {'run':<22}{'steps':>12}" + "".join(f"{s:>18}" for s in shown))
    for name, cks, feats in per_run:
        truths = [ck["truth"] for ck in cks]
        mem = [i for i, t in enumerate(truths) if t == "memorising"]
        gen = [i for i, t in enumerate(truths) if t == "generalised" and mem and i > mem[0]]
        if not gen:
            continue
        last = max(i for i in mem if i < gen[0])
        a, b = feats[last], feats[gen[0]]
        cells = "".join(f"{a[s]:>8.2f} -> {b[s]:>5.2f}".rjust(18) for s in shown)
        print(f"  {name:<22}{cks[last]['step']:>5} -> {cks[gen[0]]['step']:<5}" + cells)


if __name__ == "__main__":
    main()
