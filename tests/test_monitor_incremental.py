"""The monitor judges only its newest entry (``annotate(since=...)``): a log growing one entry
at a time gets the verdicts that one pass over the whole log gives (what ``analyze`` of the
monitor's ``alignment.jsonl`` computes), at a cost that does not grow with the run."""

import copy
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from alignctl.report import monitor_log
from alignctl.report.verdict import thresholds

METRICS = ("centroid_alignment", "centred_alignment_full", "centred_norm")
acc = st.one_of(st.none(), st.floats(0, 1), st.just(math.nan))
metric = st.one_of(st.none(), st.floats(1e-6, 1e3), st.just(math.inf))


@st.composite
def logs(draw):
    n = draw(st.integers(1, 12))
    steps = sorted(draw(st.sets(st.integers(0, 10**6), min_size=n, max_size=n)))
    if draw(st.booleans()):
        steps[0] = 0  # the inferred verdict reads the step-0 entry
    with_test = draw(st.booleans())
    n_classes = draw(st.sampled_from([1, 2, 10]))
    entries = []
    for s in steps:
        means = {k: draw(metric) for k in METRICS}
        means = {k: (math.nan if v is None else v) for k, v in means.items()}
        entries.append(monitor_log.make_entry(
            s, means, dict.fromkeys(METRICS, 0.0), train_accuracy=draw(acc),
            test_accuracy=draw(acc) if with_test else None, n_samples=8, n_classes=n_classes,
            time=0.0, seconds=0.0))  # fmt: skip
    return entries


@settings(max_examples=150, deadline=None)
@given(logs())
def test_one_entry_at_a_time_gives_the_whole_log_verdicts(entries):
    t = thresholds(None)
    whole = copy.deepcopy(entries)
    monitor_log.annotate(whole, t=t)
    grown: list[dict] = []
    for e in copy.deepcopy(entries):
        grown.append(e)
        monitor_log.annotate(grown, t=t, since=len(grown) - 1)
    assert grown == whole
    untouched = copy.deepcopy(entries)
    monitor_log.annotate(untouched, t=t, since=len(untouched) - 1)
    assert all("verdict" not in e for e in untouched[:-1])  # since: earlier entries not visited


def test_a_probe_judges_each_measurement_once(monkeypatch):
    import torch

    from alignctl.integrations.probe import Probe
    from alignctl.report import verdict

    calls = []
    judge = verdict.judge
    monkeypatch.setattr(verdict, "judge", lambda *a, **k: calls.append(1) or judge(*a, **k))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    probe = Probe(torch.randn(16, 4), torch.randint(0, 3, (16,)), metrics="fast")
    for step in range(0, 50, 10):
        probe.measure(net, step)
    assert len(calls) == 5  # each measurement judged once, when it is taken
    whole = copy.deepcopy(probe.entries)
    for e in whole:
        e.pop("verdict"), e.pop("inferred")
    monitor_log.annotate(whole, t=probe.t)
    assert whole == probe.entries
