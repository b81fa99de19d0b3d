"""How often the inferred verdict (no test split: alignment alone) agrees with the verdict
that the test split gives, over the checkpoints of the given runs.

    python benchmarks/verdict_agreement.py RUN [RUN ...] [--samples 500]

For each run, analyse with its test split (verdicts from the measured accuracies), then judge
every checkpoint again with the test accuracy hidden, exactly as for data without a test
split, and count the checkpoints where both say the same.
"""

from __future__ import annotations

import argparse

from alignctl.report.analysis import analyze
from alignctl.report.verdict import checkpoint_verdict, thresholds
from alignctl.runs.run import open_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--samples", type=int, default=500)
    args = ap.parse_args()
    total = agree = 0
    for path in args.runs:
        run = open_run(path)
        report = analyze(run, samples=args.samples, metrics="fast", device="cpu")
        t = thresholds(run.config.verdict)
        hidden, same = [], 0
        for ck in report["checkpoints"]:
            blind = {**ck, "test_accuracy": None}
            v, _ = checkpoint_verdict(blind, n_classes=2, grokked=None, t=t, history=hidden)
            hidden.append(blind)
            same += v == ck["verdict"]
            print(f"  {path} step {ck['step']:>6}: test split {ck['verdict']:<13} inferred {v}")
        n = len(report["checkpoints"])
        print(f"{path}: {same}/{n} agree")
        total, agree = total + n, agree + same
    print(f"all runs: {agree}/{total} checkpoints agree ({agree / max(total, 1):.0%})")


if __name__ == "__main__":
    main()
