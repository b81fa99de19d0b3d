"""Times of day and dates in checkpoint names are not steps: ``ckpt_20261130_2359`` was step
2359 and ``ckpt_20261201_0015`` step 15, so a run across midnight was judged by the checkpoint
of 23:59, silently; ``run-2026_11_30-23_59`` was step 59, ``ckpt_1732999999`` (Unix time) step
1732999999. Names that give only times are ordered by those times, with a note that no step is
known; four digits after a date stay a step when the folder's other names give steps there."""

from __future__ import annotations

import pytest
import torch
from test_checkpoints_folders import _found, _state

from alignctl.runs.checkpoints.names import number_in_name, timestamp_in_name

# (format of a name at a time, as training code writes them with strftime / time.time())
FORMATS = [
    "ckpt_{Y}{m}{d}_{H}{M}",
    "model_{Y}{m}{d}-{H}{M}{S}",
    "run-{Y}_{m}_{d}-{H}_{M}",
    "run_{Y}_{m}_{d}_{H}_{M}_{S}",
    "ckpt_{Y}-{m}-{d}T{H}:{M}:{S}",
    "ckpt_{Y}{m}{d}T{H}{M}",
    "ckpt_{Y}{m}{d}{H}{M}",
    "ckpt_{Y}{m}{d}{H}{M}{S}",
    "ckpt_{Y}.{m}.{d}_{H}.{M}",
    "{Y}-{m}-{d}_{H}-{M}-{S}_model",
    "ckpt_{unix}",
    "ckpt_{unix_ms}",
]
# 23:59 on one day, then 00:15, 01:30 and 10:05 the next (a run across midnight)
TIMES = [(2026, 11, 30, 23, 59, 1), (2026, 12, 1, 0, 15, 2), (2026, 12, 1, 1, 30, 3),
         (2026, 12, 1, 10, 5, 4)]  # fmt: skip


def _name(fmt: str, t: tuple) -> str:
    import calendar

    unix = calendar.timegm((*t, 0, 0, 0))
    Y, m, d, H, M, S = (f"{v:02d}" for v in t)
    return fmt.format(Y=Y, m=m, d=d, H=H, M=M, S=S, unix=unix, unix_ms=unix * 1000 + 7)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_time_in_a_name_is_no_step(fmt):
    for t in TIMES:
        name = _name(fmt, t)
        assert number_in_name(name) is None, name
        seconds = t[5] if "{S}" in fmt or "unix" in fmt else 0
        assert timestamp_in_name(name)[:6] == (*t[:5], seconds), name


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_run_across_midnight_is_ordered_by_its_times(tmp_path, fmt):
    names = [_name(fmt, t) for t in TIMES]
    for i, n in enumerate(reversed(names)):  # written in any order
        torch.save({"model": _state(i)}, tmp_path / f"{n}.pt")
    found, notes = _found(tmp_path)
    assert found == [(f"{n}.pt", None) for n in names]
    assert notes == [
        "no checkpoint records a step: ordered by the dates and times in their names, so "
        f"{names[-1]}.pt is the last one (judged by verdicts and gates)"
    ]


@pytest.mark.parametrize(
    "name, step",
    [
        ("step_100_20261130_2359", 100),  # a labelled step wins
        ("epoch3_20261130_2359", 3),
        ("run_20261130_2500", 2500),  # no hour 25: a step
        ("run_20261130_1275", 1275),  # no minute 75
        ("run_20261130_100", 100),  # three digits
        ("ckpt_999999999", 999999999),  # nine digits: no Unix time
        ("model_2359", 2359),  # no date before
    ],
)
def test_numbers_that_are_no_time_stay_steps(name, step):
    assert number_in_name(name) == step


def test_four_digits_after_a_date_are_steps_when_the_folder_says_so(tmp_path):
    """``run_20241130_{step}``: 500 and 2500 are no times of day, so 1000 and 1500 of the same
    form are steps too (not 10:00 and 15:00, left out as placed nowhere)."""
    steps = [500, 1000, 1500, 2500]
    for s in steps:
        torch.save({"model": _state(s)}, tmp_path / f"run_20241130_{s}.pt")
    found, notes = _found(tmp_path)
    assert found == [(f"run_20241130_{s}.pt", s) for s in steps] and not notes


def test_stored_steps_win_over_times(tmp_path):
    for i, t in enumerate(TIMES):
        torch.save(
            {"model": _state(i), "global_step": 10 * i}, tmp_path / f"{_name(FORMATS[0], t)}.pt"
        )
    found, notes = _found(tmp_path)
    assert [s for _, s in found] == [0, 10, 20, 30] and not notes
