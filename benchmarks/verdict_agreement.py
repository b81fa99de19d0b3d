"""How right alignctl's verdicts and recommendations are on the verdict corpus
(benchmarks/verdict_corpus.py), judged against the truth from measured accuracies.

    nice -n 10 python benchmarks/verdict_corpus.py --out corpus/      # build (cached)
    nice -n 10 python benchmarks/verdict_agreement.py --corpus corpus/

Every run is analysed once with its test split (``alignctl.analyze``; cached beside the run as
``agreement-report.json``; ``--fresh`` redoes it). Then, for every checkpoint:

- with a test split: the report's verdict against the truth;
- without one: the same entry with the test accuracy hidden, judged with thresholds fitted on
  the OTHER families only (leave-one-family-out: the held-out family never informs its own
  thresholds). Coverage = decided / fitted checkpoints (truth memorising or generalised);
  accuracy = right / decided; ``uncertain`` abstains.
- the recommendation of every run, with its test split, against the actions the corpus
  accepts; and without a test split (leave-one-family-out thresholds).
- robustness: on runs with continuous inputs, Spearman correlations of mean
  jacobian_alignment_full and jacobian_erank with PGD adversarial accuracy.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verdict_corpus import chance_of, truth_files, truth_label  # noqa: E402

from alignctl.report.analysis import analyze  # noqa: E402
from alignctl.report.evidence import infer  # noqa: E402
from alignctl.report.recommend import recommend, recorded_train  # noqa: E402
from alignctl.report.verdict import judge, thresholds  # noqa: E402
from alignctl.runs.run import open_run  # noqa: E402

TRUTHS = ("learning", "memorising", "generalised", "diverged")
SAY = {"generalising": "generalised", "robust": "generalised"}
# candidate thresholds, each list from the most to the least conservative (ties keep the first)
GRID = {
    "growth": [-99.0, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0],
    "no_gain": [-99.0, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5],
    "settle": [5.0, 3.0, 2.0, 1.0],
}
MARGIN = 1  # grid steps toward caution after fitting (see fit)
COST = 85 / 15  # a wrong decision costs 85/15 right ones: break-even at 85% accuracy


def load(corpus: Path, samples: int, fresh: bool) -> list[dict]:
    runs = []
    for truth_file in truth_files(corpus):
        folder = truth_file.parent
        cache = folder / "agreement-report.json"
        if fresh or not cache.exists():
            run = open_run(folder)
            data = run.load_data()
            attack = data.x_test is not None and data.x_test.is_floating_point()
            report = analyze(run, samples=samples, device="cpu", robustness=attack)
            cache.write_text(json.dumps(report))
            print(f"analysed {folder.name}", file=sys.stderr, flush=True)
        truth = json.loads(truth_file.read_text())
        report = json.loads(cache.read_text())
        chance = chance_of(truth["n_classes"])
        config = open_run(folder).config
        t = thresholds(config.verdict)
        for i, ck in enumerate(report["checkpoints"]):
            ck["truth"] = truth_label(ck["train_accuracy"], ck["test_accuracy"], chance)
            # the cache holds measurements; verdicts always come from the current rules
            ck.update(judge(ck, n_classes=truth["n_classes"], grokked=config.grokked, t=t,
                            history=report["checkpoints"][:i], loss=_loss(config)))  # fmt: skip
        runs.append({"truth": truth, "report": report, "config": config})
    return runs


def _loss(config) -> str | None:
    """The run's recorded training loss, as analyze reads it (None: no train section)."""
    return (recorded_train(config) or {}).get("loss")


def blind(run: dict, t: dict) -> list[dict]:
    """The run's checkpoints judged again with the test accuracy hidden."""
    hidden = []
    for ck in run["report"]["checkpoints"]:
        b = {**ck, "test_accuracy": None, "adversarial_accuracy": None}  # PGD needs a test split
        b.update(judge(b, n_classes=run["truth"]["n_classes"], grokked=None, t=t, history=hidden,
                       loss=_loss(run["config"])))  # fmt: skip
        hidden.append(b)
    return hidden


def score(runs: list[dict], t: dict) -> tuple[int, int, int]:
    """(right, wrong, fitted) of the blind verdict over the fitted checkpoints (truth
    memorising or generalised; train accuracy >= 0.99, so the verdict is the inferred one)."""
    right = wrong = fitted = 0
    for run in runs:
        cks = run["report"]["checkpoints"]
        for i, ck in enumerate(cks):
            if ck["truth"] not in ("memorising", "generalised"):
                continue
            fitted += 1
            said = SAY.get(*[infer(ck, cks[:i], t, loss=_loss(run["config"]))[0]] * 2)
            if said in ("memorising", "generalised"):
                right += said == ck["truth"]
                wrong += said != ck["truth"]
    return right, wrong, fitted


def fit(runs: list[dict], margin: int = MARGIN) -> dict:
    """The grid point with the best right - COST * wrong on ``runs`` (ties: the first), then
    ``margin`` grid steps toward caution: a boundary fitted at the edge of the memorising
    checkpoints seen is crossed by the first family that memorises a little differently."""
    best, best_t = None, None
    for values in itertools.product(*GRID.values()):
        t = thresholds(dict(zip(GRID, values, strict=True)))
        right, wrong, _ = score(runs, t)
        value = right - COST * wrong
        if best is None or value > best:
            best, best_t = value, t
    for k, grid in GRID.items():
        best_t[k] = grid[max(0, grid.index(best_t[k]) - margin)]
    return best_t


def confusion(pairs: list[tuple[str, str]], said_labels: list[str]) -> None:
    c = Counter(pairs)
    print("  " + "truth / verdict".ljust(16) + "".join(f"{s:>13}" for s in said_labels))
    for tr in TRUTHS + ("ambiguous",):
        row = [c[(tr, s)] for s in said_labels]
        if sum(row):
            print(f"  {tr:<16}" + "".join(f"{v:>13}" for v in row))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=Path("corpus"))
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--margin", type=int, default=MARGIN, help="grid steps toward caution")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # small networks: threads only contend
    runs = load(args.corpus, args.samples, args.fresh)
    families = sorted({r["truth"]["family"] for r in runs})
    print(f"corpus: {len(runs)} runs, {len(families)} families, "
          f"{sum(len(r['report']['checkpoints']) for r in runs)} checkpoints")  # fmt: skip

    print("\n== with a test split (verdicts of the current rules on the measured checkpoints)")
    pairs, right, unamb = [], 0, 0
    for run in runs:
        for ck in run["report"]["checkpoints"]:
            said = SAY.get(ck["verdict"], ck["verdict"])
            pairs.append((ck["truth"], ck["verdict"]))
            if ck["truth"] != "ambiguous":
                unamb += 1
                right += said == ck["truth"]
    print(f"right on {right} of {unamb} unambiguous checkpoints")
    confusion(pairs, ["learning", "memorising", "generalising", "robust", "diverged"])

    print(f"\n== without a test split, leave-one-family-out (margin {args.margin} grid step)")
    pairs, per_family, fitted_t = [], [], {}
    for fam in families:
        train = [r for r in runs if r["truth"]["family"] != fam]
        held = [r for r in runs if r["truth"]["family"] == fam]
        t = fit(train, args.margin)
        fitted_t[fam] = t
        r_, w_, f_ = score(held, t)
        per_family.append((fam, r_, w_, f_))
        for run in held:
            for ck, b in zip(run["report"]["checkpoints"], blind(run, t), strict=True):
                pairs.append((ck["truth"], b["verdict"]))
    right = sum(p[1] for p in per_family)
    wrong = sum(p[2] for p in per_family)
    fitted = sum(p[3] for p in per_family)
    decided = right + wrong
    coverage = decided / max(fitted, 1)  # a tiny corpus may have no fitted checkpoint
    print(f"fitted checkpoints {fitted}; decided {decided} (coverage {coverage:.0%}); "
          f"right {right} of {decided} ({right / max(decided, 1):.0%})")  # fmt: skip
    for fam, r_, w_, f_ in per_family:
        t = fitted_t[fam]
        ths = ", ".join(f"{k} {t[k]:g}" for k in GRID)
        print(f"  held out {fam:<15} fitted {f_:>3}  decided {r_ + w_:>3}  right {r_:>3}   ({ths})")
    confusion(pairs, ["learning", "memorising", "uncertain", "generalising", "robust",
                      "diverged"])  # fmt: skip
    all_t, shipped = fit(runs), thresholds(None)
    print(
        "thresholds fitted on all families: "
        + ", ".join(f"{k} {all_t[k]:g}" for k in GRID)
        + "; shipped defaults: "
        + ", ".join(f"{k} {shipped[k]:g}" for k in GRID)
    )

    print("\n== recommendation per run")
    ok_test = ok_blind = 0
    for run in runs:
        tr, rep = run["truth"], run["report"]
        t = thresholds(run["config"].verdict)
        rec = recommend(rep["checkpoints"], t, n_classes=tr["n_classes"],
                        config_train=recorded_train(run["config"]))  # fmt: skip
        hidden = blind(run, fitted_t[tr["family"]])
        rec_b = recommend(hidden, fitted_t[tr["family"]], n_classes=tr["n_classes"],
                          config_train=recorded_train(run["config"]))  # fmt: skip
        a, b = rec["action"] in tr["accept"], rec_b["action"] in tr["accept"]
        ok_test, ok_blind = ok_test + a, ok_blind + b
        print(f"  {tr['name']:<27} accept {'/'.join(tr['accept']):<30} test split: "
              f"{rec['action']:<15} {'right' if a else 'WRONG'}   without: {rec_b['action']:<15} "
              f"{'right' if b else 'wrong'}")  # fmt: skip
    print(f"right action with a test split: {ok_test} of {len(runs)} runs; "
          f"without (leave-one-family-out): {ok_blind} of {len(runs)}")  # fmt: skip
    robustness(runs)


def robustness(runs: list[dict]) -> None:
    from scipy.stats import spearmanr

    rows = [(ck["metrics"].get("jacobian_alignment_full"), ck["metrics"].get("jacobian_erank"),
             ck["adversarial_accuracy"], ck["test_accuracy"], ck["verdict"], r["truth"]["name"])
            for r in runs for ck in r["report"]["checkpoints"]
            if ck.get("adversarial_accuracy") is not None
            and ck["truth"] in ("memorising", "generalised")]  # fmt: skip
    print(
        "\n== robustness: fitted checkpoints of runs with continuous inputs, PGD-10, "
        "eps 4/255 of the input range"
    )
    if len(rows) < 3:
        print("  too few checkpoints with adversarial accuracy")
        return
    af, er, adv = ([r[i] for r in rows] for i in range(3))
    rob = [r[2] / r[3] if r[3] else 0.0 for r in rows]
    print(f"  {len(rows)} checkpoints from {len({r[5] for r in rows})} runs")
    for name, xs in (("jacobian_alignment_full", af), ("jacobian_erank", er)):
        s1, p1 = spearmanr(xs, adv)
        s2, p2 = spearmanr(xs, rob)
        print(f"  {name:<24} vs adversarial accuracy: Spearman {s1:+.2f} (p {p1:.2g}); "
              f"vs adversarial / test accuracy: {s2:+.2f} (p {p2:.2g})")  # fmt: skip
    hi = [a for a, r in zip(adv, rows, strict=True) if r[0] >= 0.5 and r[1] <= 1.5]
    print(f"  checkpoints with the section 3.2 geometry (alignment_full >= 0.5, erank <= 1.5):"
          f" {len(hi)}; their adversarial accuracy: "
          + (", ".join(f"{a:.2f}" for a in hi) if hi else "-"))  # fmt: skip
    print(f"  adversarial accuracy over all: min {min(adv):.2f}, median "
          f"{sorted(adv)[len(adv) // 2]:.2f}, max {max(adv):.2f}; robust verdicts: "
          f"{sum(r[4] == 'robust' for r in rows)}")  # fmt: skip


if __name__ == "__main__":
    main()
