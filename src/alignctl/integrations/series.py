"""A callback's series of measurements saved in the framework's checkpoints and read back on a
resume, so that the verdicts and ``stop_when`` judge the whole run and not only its resumed
part: Lightning saves it as the callback's ``state_dict``; Hugging Face in
``trainer_state.json`` (``TrainerState.stateful_callbacks``, under a key no callback class
is named, so ``restore_callback_states_from_checkpoint`` leaves it alone).

The series is JSON text (a checkpoint loads with ``weights_only``) with the digest of the probe
it was measured on: another probe's series is not read as this one's."""

from __future__ import annotations

import hashlib
import json


def probe_digest(probe) -> str:
    """What a series was measured on: the probe's tensors and the metric names."""
    from alignctl.report.cache_keys import tensor_digest

    h = hashlib.sha256(repr(probe.names).encode())
    for t in (probe.x, probe.y, *(probe.test or ())):
        tensor_digest(h, t)
    return h.hexdigest()[:16]


def saved(entries: list[dict], digest: str) -> dict:
    """The state to save: ``{"probe": digest, "entries": JSON text}``."""
    return {"probe": digest, "entries": json.dumps(entries)}


def restored(state, digest: str) -> list[dict] | None:
    """The entries of a state :func:`saved` wrote for the probe ``digest``; None for another
    probe's series or a state this module did not write."""
    try:
        if state.get("probe") != digest:
            return None
        entries = json.loads(state["entries"])
        if isinstance(entries, list) and all(
            isinstance(e, dict) and isinstance(e.get("step"), int) for e in entries
        ):
            return entries
    except (AttributeError, KeyError, TypeError, ValueError):
        pass
    return None
