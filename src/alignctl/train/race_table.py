"""The statistics of a race's table (the paper's Tables 1 and 4): per regulariser, mean and
standard deviation of epochs to grok, speed-up over the baseline and its p-value (paired
t-test when every run grokked, else the log-rank test under right-censoring at max_epochs),
mean seconds and wall-clock speed-up, and what a speed-up with censored runs bounds."""

from __future__ import annotations

import statistics

PAIRED_T = "paired t-test"
LOGRANK = "log-rank"


def compare(
    base: list[float], base_grokked: list[bool], other: list[float], other_grokked: list[bool]
) -> tuple[float | None, str]:
    """(p-value, test) for epochs to grok of the baseline against another regulariser.

    Every run of both grokked: the paired t-test on the matched seeds
    (``scipy.stats.ttest_rel``; undefined, None, with one seed or when every difference is
    equal). Otherwise the epochs of runs that did not grok are right-censored at max_epochs,
    and a t-test on them means little: the log-rank test (``scipy.stats.logrank`` on
    ``CensoredData``), valid under censoring, unpaired; (None, None) when no run grokked.
    """
    import math

    from alignctl.errors import missing_extra

    try:
        from scipy.stats import CensoredData, logrank, ttest_rel
    except ImportError:
        raise missing_extra("race statistics", "scipy", "stats") from None
    if all(base_grokked) and all(other_grokked):
        if len(base) > 1 and len({b - x for b, x in zip(base, other, strict=True)}) > 1:
            return float(ttest_rel(base, other).pvalue), PAIRED_T
        return None, PAIRED_T

    if not any(base_grokked) and not any(other_grokked):
        return None, None

    def censored(epochs, grokked):
        pairs = list(zip(epochs, grokked, strict=True))
        return CensoredData([e for e, g in pairs if g], right=[e for e, g in pairs if not g])

    p = float(logrank(censored(base, base_grokked), censored(other, other_grokked)).pvalue)
    return (p if math.isfinite(p) else None), LOGRANK


def table(results: dict, regs: list[str], seeds: list[int], max_epochs: int) -> list[dict]:
    """Per regulariser: mean/std (population, ``pstdev``) epochs, speed-up over the first
    entry, p-value against it and the test that gave it (:func:`compare`), mean seconds,
    wall-clock speed-up, how many runs grokked."""

    def grokked_at(r, s):  # a diverged pair did not grok, whatever it logged before
        res = results[(r, s)]
        return None if res.get("status") == "diverged" else res["grokked_epoch"]

    def grokked_flags(r):  # the same rule: a diverged run is censored for the test too
        return [grokked_at(r, s) is not None for s in seeds]

    def epochs(r):
        return [max_epochs if grokked_at(r, s) is None else grokked_at(r, s) for s in seeds]

    def seconds(r):
        return [results[(r, s)]["train_seconds"] for s in seeds]

    def grokked_runs(r):
        return sum(grokked_at(r, s) is not None for s in seeds)

    base_e, base_s = epochs(regs[0]), seconds(regs[0])
    base_censored = grokked_runs(regs[0]) < len(seeds)
    rows = []
    for r in regs:
        e, sec = epochs(r), seconds(r)
        grokked = grokked_runs(r)
        censored = grokked < len(seeds)
        p, test = None, None
        if r != regs[0]:
            p, test = compare(base_e, grokked_flags(regs[0]), e, grokked_flags(r))
        me, ms = statistics.mean(e), statistics.mean(sec)
        rows.append({
            "reg": r, "mean_epochs": me, "std_epochs": statistics.pstdev(e),
            "speedup": statistics.mean(base_e) / me if me else None, "p_value": p, "test": test,
            "mean_seconds": ms, "wall_speedup": statistics.mean(base_s) / ms if ms else None,
            "grokked": grokked, "runs": len(seeds),
            "diverged": sum(results[(r, s)].get("status") == "diverged" for s in seeds),
            "censored": censored or base_censored,
            "bound": bound(base_censored, censored) if r != regs[0] else None,
        })  # fmt: skip
    return rows


def bound(base_censored: bool, reg_censored: bool) -> str | None:
    """What a speed-up with censored runs (counted at max_epochs) is. A censored baseline run
    took at least as long as counted, so the speed-up can only be larger ("lower" bound); a
    censored regulariser run makes it an "upper" bound; both: "unknown"; none: None (exact)."""
    if base_censored and reg_censored:
        return "unknown"
    return "lower" if base_censored else "upper" if reg_censored else None
