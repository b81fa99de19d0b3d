"""Strict JSON for everything a run writes (``train_log.jsonl``, ``run.json``, race results)
and reads back (cache entries, a monitor's log, race results).

Python's ``json`` writes ``NaN``/``Infinity`` by default, which is not JSON: other parsers
(``jq``, JavaScript, Go) refuse the file. Every non-finite float becomes ``null`` here and the
encoder runs with ``allow_nan=False``, so an invalid document cannot be written at all.
"""

from __future__ import annotations

import json
import math

from alignctl.runs.limits import loads_json


def finite_or_none(obj):
    """``obj`` with every float that is NaN or +-inf replaced by ``None``, recursively through
    dicts, lists and tuples (tuples become lists, as JSON has no tuple). Other values unchanged."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def dumps_strict(obj, **kwargs) -> str:
    """``json.dumps`` of :func:`finite_or_none` (``obj``) with ``allow_nan=False``."""
    return json.dumps(finite_or_none(obj), allow_nan=False, **kwargs)


def loads_strict(text: str):
    """``json.loads`` refusing ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON): ValueError."""
    return loads_json(text, parse_constant=_no_constant)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")
