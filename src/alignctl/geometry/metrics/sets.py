"""Named sets of metrics and the one parser of a metric selection, shared by
:func:`alignctl.measure` (``metrics="standard"`` or ``"jacobian_norm"`` as well as a list),
``alignctl analyze --metrics`` and the integrations' ``metrics=``."""

from __future__ import annotations

from alignctl.errors import short

CENTROID = ["centroid_alignment", "centroid_inner", "centroid_norm"]
STANDARD = CENTROID + [
    "jacobian_alignment", "jacobian_alignment_full", "jacobian_norm", "jacobian_pc1",
    "jacobian_erank",
    # softmax-invariant: what the verdict without a test split reads (report/evidence.py)
    "centred_label_alignment", "centred_alignment_full", "centred_norm",
]  # fmt: skip
METRIC_SETS = {"fast": CENTROID, "standard": STANDARD}


def resolve_metrics(spec: str | list[str] | None) -> list[str]:
    """``fast`` (centroid metrics: one backward pass per batch), ``standard`` (the table's),
    ``full`` (every registered metric but the opt-in ones) or a comma-separated list of
    names and sets (``standard,local_complexity``); a list of names and sets as well.
    InputError naming the valid ones for an unknown name."""
    from alignctl.geometry.metrics import METRICS

    if spec is None:
        return list(STANDARD)
    sets = {**METRIC_SETS, "full": [m for m in METRICS.names() if not METRICS.get(m).opt_in]}
    if isinstance(spec, str):
        parts = [s.strip() for s in spec.split(",")]
    elif isinstance(spec, list | tuple | set | frozenset):
        parts = list(spec)
    else:  # an int is not iterable; a tensor or a dict would be read element by element
        from alignctl.errors import InputError

        raise InputError(
            f"metrics must be a name, a set name or a list of names, not {short(spec)}"
        )
    names: list[str] = []
    for part in parts:
        for n in sets.get(part) or [part]:
            METRICS.get(n)  # InputError naming the valid ones
            if n not in names:
                names.append(n)
    return names
