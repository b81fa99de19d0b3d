"""``alignctl.measure(metrics=...)`` takes what ``analyze --metrics`` and the integrations take:
a list of names, or one string (a name, a set, a comma-separated list). A string was read
letter by letter before: ``metrics="jacobian_norm"`` said ``unknown metric 'j'``."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import alignctl
from alignctl.errors import InputError
from alignctl.geometry.metrics.sets import METRIC_SETS, STANDARD

torch.manual_seed(0)
NET = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
X, Y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(STANDARD + list(METRIC_SETS)), min_size=1, max_size=5))
def test_a_string_selection_measures_its_names_and_sets(parts):
    want = []
    for part in parts:
        for n in METRIC_SETS.get(part, [part]):
            if n not in want:
                want.append(n)
    got = alignctl.measure(NET, X, Y, metrics=" , ".join(parts))
    assert list(got) == want
    listed = alignctl.measure(NET, X, Y, metrics=want)
    for n in want:
        assert torch.equal(got[n], listed[n]), n
    assert list(alignctl.measure(NET, X, Y, metrics=parts)) == want


@pytest.mark.parametrize("spec", ["jacobian_nrom", "standard,nope", ["fast", "j"]])
def test_an_unknown_name_is_named_whole(spec):
    bad = "jacobian_nrom" if spec == "jacobian_nrom" else ("nope" if "nope" in spec else "j")
    with pytest.raises(InputError, match=f"unknown metric '{bad}'; valid:"):
        alignctl.measure(NET, X, Y, metrics=spec)
