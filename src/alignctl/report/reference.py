"""A run's start when it has no step-0 checkpoint: a fresh initialisation of its model.

The inferred verdict (:mod:`alignctl.report.evidence`) compares the network with itself at
initialisation. Lightning's ``ModelCheckpoint`` and the Hugging Face ``Trainer`` never save step
0, and many hand-written loops save after the first epoch, so without a stand-in every such run
would abstain on every checkpoint. The stand-in is the run's own model built by its factory or
config (:meth:`alignctl.runs.run.Run.build_model`), seeded (``SEED``) so that every report of
the run reads the same numbers, measured on the same samples with the same options as the
checkpoints. It shares the architecture and initialisation scheme, not the random draw: on the
verdict corpus's architectures ``centred_norm`` differed between two initialisations by
|log ratio| <= 0.25 (0.75 for a width-2 network), so ``norm_growth`` reads against it, while
``centred_alignment_full`` differed by up to 1.5 and ``alignment_gain`` reads nothing.

Report field: ``reference``: {"source": "fresh initialisation", "seed", "metrics"} or None.
"""

from __future__ import annotations

import torch

SEED = 0
NEEDED = ("centred_norm", "centred_alignment_full")


def needs_reference(refs) -> bool | None:
    """Whether a run with these checkpoint refs (in step order) needs the stand-in: True when
    it has no step-0 checkpoint whose step is known (a ref without a step is numbered by its
    position: not evidence that it is the start); None when its first checkpoint is step 0,
    which is the start only if it does not fit the training data yet (a loop that saves
    ``epoch_0.pt`` after its first epoch): decided by :func:`needs_reference_after` once that
    checkpoint is measured; False for no checkpoints."""
    if not refs:
        return False
    return None if any(getattr(r, "step", None) == 0 for r in refs) else True


def needs_reference_after(first: dict, verdict_config) -> bool:
    """Whether the stand-in is needed, given the entry of the run's step-0 checkpoint."""
    from alignctl.report.evidence import is_start
    from alignctl.report.verdict import thresholds

    return not is_start(first, thresholds(verdict_config)["fit"])


def measure_reference(run, xs, ys, *, names, dev, spec, batch_size=None, max_memory=None,
                      sketch=None) -> dict | None:  # fmt: skip
    """{"source", "seed", "metrics": {name: mean}} of a fresh, seeded initialisation of the
    run's model on the samples ``xs``/``ys`` (the checkpoints'), for the metrics in ``names``
    that the evidence reads; None when none of them is measured (e.g. ``--metrics fast``) or
    the fresh model cannot be measured (the checkpoints' own errors say why)."""
    from alignctl.geometry.measure import measure

    wanted = [n for n in NEEDED if n in names]
    if not wanted:
        return None
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(SEED)
        model = run.build_model()
    try:
        values = measure(model.to(dev), xs, ys, metrics=wanted, device=dev, output=spec,
                         batch_size=batch_size, max_memory=max_memory, sketch=sketch)  # fmt: skip
    except Exception:  # noqa: BLE001 (no stand-in: the verdict abstains, as without one)
        return None
    metrics = {k: float(v.double().mean()) for k, v in values.items()}
    return {"source": "fresh initialisation", "seed": SEED, "metrics": metrics}
