"""``alignctl analyze`` and ``alignctl race`` spread over the ranks of a torchrun group
(:mod:`alignctl.report.distributed`).

analyze: the checkpoints to measure (every one, or only the cache's misses: the cache is
read and written by rank 0 alone) are dealt round robin over the ranks
(:func:`~alignctl.report.distributed.round_robin`); each rank measures its share with
:func:`alignctl.report.analysis.analyze`, the code a single process runs, and each
checkpoint is measured whole by one rank, so its numbers are the ones a single process
computes: bit for bit with the same device, dtype and thread count (no value is summed
across ranks; only a different thread count or device could change the float summation
order inside one checkpoint's batches). Rank 0 gathers the entries (a few hundred bytes
each, with their loading and measurement notes), puts them back in step order and
recomputes what reads more than one checkpoint, as the single-process path does: every
verdict (the inferred verdict compares with earlier checkpoints), the recommendation, the
run's step unit and the notes, in the order one process gives them.

One checkpoint to measure (one huge checkpoint, or the one new checkpoint of a cached run):
its samples are dealt instead, in contiguous blocks; rank 0 concatenates the per-sample values
in order and takes means and stds over them as one process does (each value comes from a
smaller batch, so equal up to the rounding of batched kernels). Accuracies and PGD stay on
rank 0. Not when its whole-Jacobian metrics are sketched (many classes): the sketch's random
probes depend on the chunks, so rank 0 measures such a checkpoint alone, as one process.

race: the (regulariser, seed) pairs not finished on disk are dealt the same way; each rank
trains its pairs (``--workers`` processes each) and rank 0 tabulates them all.
"""

from __future__ import annotations

import dataclasses
import functools

from alignctl.report import analysis
from alignctl.report.checkpoint_measure import _subset
from alignctl.report.distributed import Group, active, round_robin
from alignctl.report.reference import needs_reference


def analyze(run, **kwargs) -> dict:
    """:func:`alignctl.report.analysis.analyze` (same arguments, same report), over the
    ranks of the active group when there is one (:func:`alignctl.report.distributed.join`)."""
    group = active()
    if group is None or group.size == 1:
        return analysis.analyze(run, **kwargs)
    return analysis.analyze(run, **kwargs, _measure=functools.partial(_sharded, group))


def _sharded(group: Group, run, *, on_checkpoint=None, keep_samples=False,
             _checkpoint_notes=False, **opts) -> dict:  # fmt: skip
    refs = list(run.checkpoints)
    # the run travels without its data (each rank loads it) and without notes (gathered)
    light = dataclasses.replace(run, checkpoints=[], notes=[], _data=None)
    if len(refs) < 2:  # one checkpoint (or none): its samples are dealt instead
        over = functools.partial(_measure_over_samples, group, light, refs, opts)
        return analysis.analyze(run, **opts, on_checkpoint=on_checkpoint,
                                keep_samples=keep_samples, _checkpoint_notes=_checkpoint_notes,
                                _measure_samples=over)  # fmt: skip
    deal = round_robin(len(refs), group.size)
    # the whole run's start decides; rank 0 alone measures the stand-in (report.reference),
    # deciding from checkpoint 0 (its first) when that is step 0 (want None)
    want = needs_reference(refs) if opts.get("_reference") is None else opts["_reference"]
    shares = [(light, [refs[i] for i in idx], idx,
               {**opts, "keep_samples": keep_samples, "_reference": want if j == 0 else False})
              for j, idx in enumerate(deal)]  # fmt: skip

    def progress(entry, i, n):  # rank 0 sees its own share; the others keep pace with it
        if on_checkpoint:
            on_checkpoint(entry, min(len(refs), i * group.size), len(refs))

    reports = group.map(_measure_share, shares, lambda: _measure_share(shares[0], progress))
    entries: list = [None] * len(refs)
    per_sample: list = [None] * len(refs)
    for idx, rep in zip(deal, reports, strict=True):
        for j, i in enumerate(idx):
            entries[i] = rep["checkpoints"][j]
            if keep_samples:
                per_sample[i] = rep["samples"]["metrics"][j]
    report = reports[0]  # rank 0 always has checkpoint 0: the run-level fields are its own
    if keep_samples:
        report["samples"] = {**report["samples"], "metrics": per_sample}
    _merge(run, report, entries, [t for rep in reports if rep for t in rep["notes"]])
    if not _checkpoint_notes:
        for entry in entries:
            for private in ("_notes", "_classes"):
                entry.pop(private, None)
    return report


def _measure_share(share, progress=None) -> dict | None:
    """One rank's checkpoints (see :mod:`.distributed`); an exception says which checkpoint
    (``at``, its index in the run) it came from, so rank 0 raises the earliest."""
    light, refs, idx, opts = share
    if not refs:
        return None
    done = [0]

    def tick(entry, i, n):
        done[0] = i
        if refs[i - 1].step is None:  # numbered by its place in the run, not in this share
            entry["step"] = idx[i - 1]
        if progress:
            progress(entry, i, n)

    try:
        return analysis.analyze(dataclasses.replace(light, checkpoints=refs, notes=[]), **opts,
                                on_checkpoint=tick, _checkpoint_notes=True)  # fmt: skip
    except Exception as e:
        e.at = idx[min(done[0], len(idx) - 1)]
        raise


def _merge(run, report: dict, entries: list[dict], share_notes: list[str]) -> None:
    """The report over all ``entries`` (in step order, with ``_notes``): notes as one process
    orders them (discovery, loading, measurement), verdicts, recommendation, step unit."""
    from alignctl.report.cache import rejudge
    from alignctl.report.steps import run_step_unit

    loads = [t for e in entries for t in e["_notes"]["load"]]
    measures = [t for e in entries for t in e["_notes"]["measure"]]
    report["notes"] = list(dict.fromkeys([*run.notes, *loads, *measures, *share_notes]))
    rejudge(run, report, entries, [e["_classes"] for e in entries])
    report["checkpoints"] = entries
    report["step_unit"] = run_step_unit([e["step_unit"] for e in entries])


def _measure_over_samples(group: Group, light, refs, opts, model, xs, ys, **kwargs) -> dict:
    """:func:`alignctl.geometry.measure.measure` of the one checkpoint of ``refs`` (loaded in
    ``model``) with its samples in contiguous blocks over the ranks: rank 0 measures the first
    block on ``model``, rank r loads the checkpoint and measures block r; the per-sample
    values are concatenated in order, so means and stds are taken over the same values in
    the same order as one process (each value computed in a smaller batch: equal up to the
    rounding of batched kernels). Measurement notes of every rank, each once."""
    import torch

    from alignctl.geometry.measure import measure

    notes = kwargs.pop("notes", None)
    errors = kwargs.pop("errors", None)  # sketched metrics' per-sample errors, joined likewise
    if len(xs) < group.size or _sketched(model, xs, kwargs):
        # not a sample for every rank (not worth a round trip), or sketched estimates: their
        # random probes are drawn chunk after chunk and stop on a chunk's widest half-width,
        # so a rank's block of samples would get other probes than one process gives them
        # (values 0.05-0.5% apart, within their errors, but not one process's report)
        return measure(model, xs, ys, **kwargs, notes=notes, errors=errors)
    bounds = [len(xs) * r // group.size for r in range(group.size + 1)]
    blocks = list(zip(bounds[:-1], bounds[1:], strict=True))
    shares = [(light, refs[0], lo, hi, opts, kwargs) for lo, hi in blocks]

    def mine():
        mine_notes: list[str] = []
        mine_errors: dict = {}
        lo, hi = blocks[0]
        values = measure(model, xs[lo:hi], ys[lo:hi], **kwargs, notes=mine_notes,
                         errors=mine_errors)  # fmt: skip
        return ({k: v.cpu() for k, v in values.items()}, mine_notes,
                {k: v.cpu() for k, v in mine_errors.items()})  # fmt: skip

    parts = group.map(_measure_slice, shares, mine)
    if notes is not None:
        notes.extend(dict.fromkeys(t for _, got, _ in parts for t in got if t not in notes))
    dev = kwargs.get("device")
    if errors is not None:
        for k in parts[0][2]:
            errors[k] = torch.cat([errs[k] for _, _, errs in parts]).to(dev)
    return {k: torch.cat([values[k] for values, _, _ in parts]).to(dev) for k in parts[0][0]}


def _sketched(model, xs, kwargs) -> bool:
    """Whether measure(model, xs, **kwargs) sketches: a whole-Jacobian metric is asked for
    and :func:`~alignctl.geometry.sketch.resolve` gives a K for the logits' width C (one
    sample predicted; the plan then only lowers K)."""
    from alignctl.evaluation.accuracy import predict
    from alignctl.geometry.metrics import METRICS
    from alignctl.geometry.sketch import resolve

    names = kwargs.get("metrics")
    names = METRICS.names() if names is None else names
    if kwargs.get("sketch") == 0 or all(METRICS.get(m).needs != "jacobian" for m in names):
        return False
    out = predict(model, xs[:1], kwargs.get("device"), output=kwargs.get("output"))
    return resolve(kwargs.get("sketch"), 1 if out.dim() == 1 else int(out.shape[1])) is not None


def _measure_slice(share) -> tuple[dict, list[str], dict]:
    """Rank r's block of samples: the run's data, model and checkpoint loaded here."""
    from alignctl.geometry.devices import resolve_device
    from alignctl.geometry.measure import measure
    from alignctl.geometry.threads import num_threads

    light, ref, lo, hi, opts, kwargs = share
    run = dataclasses.replace(light, checkpoints=[ref], notes=[])
    data = run.load_data()
    xs, ys = (
        (data.x_train, data.y_train) if opts["split"] == "train" else (data.x_test, data.y_test)
    )
    xs, ys, _ = _subset(xs, ys, opts["samples"])
    dev = resolve_device(opts["device"])
    model = run.build_model().to(dev)
    run.load_checkpoint(model, ref)
    notes: list[str] = []
    errors: dict = {}
    with num_threads(opts["threads"]):
        values = measure(model, xs[lo:hi], ys[lo:hi], **{**kwargs, "device": dev}, notes=notes,
                         errors=errors)  # fmt: skip
    return ({k: v.cpu() for k, v in values.items()}, notes,
            {k: v.cpu() for k, v in errors.items()})  # fmt: skip


def race_runner():
    """The ``runner`` for :func:`alignctl.train.race.run_race` that deals the pairs over the
    active group's ranks; None (run_race's own pool) without a group."""
    group = active()
    if group is None or group.size == 1:
        return None
    return functools.partial(_race_over, group)


def _race_over(group: Group, jobs: list[dict], workers: int, on_result) -> None:
    deal = round_robin(len(jobs), group.size)
    shares = [([jobs[i] for i in idx], workers, group.local_size) for idx in deal]
    for idx, done in zip(deal, group.map(_race_share, shares), strict=True):
        for i, summary in zip(idx, done or [], strict=True):
            on_result(jobs[i], summary)


def _race_share(share) -> list[dict] | None:
    """One rank's pairs through run_race's own pool; their summaries in the share's order."""
    from alignctl.train.race import run_jobs

    jobs, workers, local_size = share
    if not jobs:
        return None
    for job in jobs:  # the machine's cores are shared by the ranks on it
        job["max_threads"] = max(1, job["max_threads"] // max(1, local_size))
    got: dict[int, dict] = {}
    run_jobs(jobs, workers, lambda job, summary: got.__setitem__(jobs.index(job), summary))
    return [got[i] for i in range(len(jobs))]
