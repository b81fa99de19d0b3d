"""What a checkpoint's name says about its place in training: a step (:func:`number_in_name`)
or a time it was saved (:func:`timestamp_in_name`), never a metric's, version's, seed's, rank's,
precision's or date's digits.

A name's time is a date ``YYYYMMDD`` or ``YYYY-MM-DD`` (any one of ``-_.`` between, or none),
optionally followed by a time of day ``HHMM`` / ``HHMMSS`` (or ``HH-MM`` / ``HH:MM:SS``: one
separator throughout), or a Unix time of 10 digits (seconds, 2001-2033) or 13 (milliseconds).
Its digits are never a step: ``ckpt_20261130_2359`` read as step 2359 ordered a run across
midnight by the time of day (``ckpt_20261201_0015``: step 15), silently. A date followed by
four digits is ambiguous (``run_20241130_1500``: 15:00, or step 1500); it is a time unless the
folder's other names of the same form give steps there (:func:`clock_as_step`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DAY = r"(?P<y>(?:19|20)\d\d)(?P<ds>[-_.]?)(?P<mo>0[1-9]|1[0-2])(?P=ds)(?P<d>0[1-9]|[12]\d|3[01])"
_HH, _MM = r"(?P<h>[01]\d|2[0-3])", r"(?P<mi>[0-5]\d)"
_SEPARATED = rf"{_HH}(?P<ts>[-:._]){_MM}(?:(?P=ts)(?P<s>[0-5]\d))?"


def _clock(four_digits: bool) -> str:
    """A time of day after a date; ``HHMM`` after a separator only when ``four_digits`` (glued
    on, ``202611302359``, or after a ``T``, it is always a time)."""
    seconds = r"(?P<cs>[0-5]\d)" + ("?" if four_digits else "")
    compact = r"(?P<ch>[01]\d|2[0-3])(?P<cm>[0-5]\d)" + seconds
    glued = "" if four_digits else r"|T?(?:[01]\d|2[0-3])[0-5]\d"
    return rf"(?:[_\-.T]?(?:{_SEPARATED}|{compact}){glued})?"


_UNIX = r"(?P<unix>1\d{9}(?:\d{3})?)"  # seconds 2001-09-09 .. 2033-05-18, or milliseconds


def _stamp(four_digits: bool) -> str:
    return rf"(?<![\d.])(?:{_DAY}{_clock(four_digits)}|{_UNIX})(?![\d.])"


# A number a name labels as a step: Lightning's ``step=1500``, ``step_1500``, DeepSpeed's
# ``global_step1500``, Megatron's ``iter_0001500``, ``iteration-3``, ``it_100``.
_LABELLED = re.compile(
    r"(?<![a-z])(?:global_?)?(?:steps?|iters?|iterations?|it)[=_\-]?(\d+)(?!\d)", re.I
)
# Numbers in a name that are not its place in training: decimals and exponents of metrics
# (``val_loss=0.35``, ``loss8.1``, ``lr1e-3``), other ``key=value`` metrics of Lightning's
# filename templates (``val_acc=95``; ``epoch=3`` stays), the ``-v1`` that Lightning appends to
# a name already taken and other version tags (``model_100_v2``), seeds and ranks
# (``seed42``, ``rank0``), and times (module docstring).
_FLOAT = r"\d+\.\d+(?:e[-+]?\d+)?|\d+e[-+]\d+"
_METRIC = r"(?<![a-z])(?!epoch=)[a-z][a-z_]*=-?(?:\d+\.\d+(?:e[-+]?\d+)?|\d+e[-+]\d+|\d+)"
_TAGS = r"(?<![a-z])(?:v|version|seed|rank)[_\-]?\d+(?!\d)"
# numeric precisions and quantisations (``fp16``, ``bf16``, ``float32``, ``int8``, ``q4``,
# ``w8a8``, ``8bit``): ``ckpt_100_fp16`` is step 100, not 16
_PRECISIONS = (
    r"(?<![a-z])(?:b?float|u?int|fp|bf|tf|f|q)(?:4|8|16|32|64)(?!\d)"
    r"|(?<![a-z])w\d+a\d+(?!\d)|(?<![a-z0-9])(?:4|8|16|32)[_\-]?bits?(?![a-z])"
)
_OTHERS = rf"{_METRIC}|{_FLOAT}|{_TAGS}|{_PRECISIONS}"
_STAMP = re.compile(_stamp(True), re.I)
_NOT_STEPS = {clock: re.compile(rf"{_stamp(clock)}|{_OTHERS}", re.I) for clock in (True, False)}
# An epoch the name labels (``epoch_10``, ``ep3``, ``resnet50_e10``): preferred to a number the
# name leaves unlabelled (``epoch_10_seed42``: 10; ``e10_resnet50``: 10, not the 50 of resnet50).
_EPOCH = re.compile(r"(?<![a-z0-9])(?:epochs?|ep|e)[=_\-]?(\d+)(?![a-z0-9])", re.I)


def number_in_name(name: str, *, clock: bool = True) -> int | None:
    """The step a name gives: the last number labelled as a step (``epoch=3-step=1500``:
    1500); else, of the numbers that are not a metric, version tag, seed, rank or time, the
    last labelled as an epoch (``e10_resnet50``: 10), else the last one
    (``model_step100_loss8.1`` -> 100; ``epoch=0-step=20-v1`` -> 20); else None.
    ``clock=False`` reads four digits after a date as a number, not a time of day."""
    labelled = _LABELLED.findall(name)
    if labelled:
        return int(labelled[-1])
    rest = _NOT_STEPS[clock].sub(" ", name)
    nums = _EPOCH.findall(rest) or re.findall(r"\d+", rest)
    return int(nums[-1]) if nums else None


def plain_numbers(name: str) -> list[int]:
    """The numbers of a name that may be its step: those left once metrics, version tags,
    seeds, ranks, precisions and times are taken out (``ckpt_100_gpt2``: [100, 2])."""
    return [int(n) for n in re.findall(r"\d+", _NOT_STEPS[True].sub(" ", name))]


def timestamp_in_name(name: str) -> tuple[int, ...] | None:
    """The last time a name gives, as (year, month, day, hour, minute, second, ms) in UTC
    (a missing time of day is 0); None when it gives none. Only for names without a step."""
    found = None
    for m in _STAMP.finditer(name):
        if m["unix"]:
            ms = int(m["unix"]) if len(m["unix"]) == 13 else int(m["unix"]) * 1000
            t = datetime.fromtimestamp(ms // 1000, UTC)
            found = (t.year, t.month, t.day, t.hour, t.minute, t.second, ms % 1000)
        else:
            parts = (
                m["y"],
                m["mo"],
                m["d"],
                m["h"] or m["ch"],
                m["mi"] or m["cm"],
                m["s"] or m["cs"],
            )
            found = (*(int(p or 0) for p in parts), 0)
    return found


def name_form(name: str) -> str:
    """The name with each run of digits replaced by ``#`` (``run_20241130_1500``: run_#_#)."""
    return re.sub(r"\d+", "#", name)


def clock_as_step(name: str, forms_with_steps: set[str]) -> int | None:
    """The step of a name whose four digits after a date were read as a time of day, when
    names of the same :func:`name_form` give steps (``run_20241130_100`` beside
    ``run_20241130_1500``: both steps); else None."""
    if name_form(name) not in forms_with_steps:
        return None
    return number_in_name(name, clock=False)
