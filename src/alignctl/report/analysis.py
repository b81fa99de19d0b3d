"""``alignctl analyze`` as a library call: one report dict for a run (paper sections 2-4).

The report's schema is the JSON of ``alignctl analyze --json`` (README). Checkpoints are
streamed: one state dict in memory at a time.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from alignctl._version import __version__
from alignctl.errors import InputError, first_line, short
from alignctl.geometry.arguments import flags
from alignctl.geometry.metrics.sets import (  # noqa: F401 (the report's API, re-exported)
    CENTROID,
    METRIC_SETS,
    STANDARD,
    resolve_metrics,
)
from alignctl.report.analysis_inputs import (
    analysis_threads,
    attackable,
    check_options,
    measured_on,
    output_spec,
    token_inputs,
)
from alignctl.report.checkpoint_measure import (
    _measure_checkpoint,
    _model_error,
    _numeric,
    _samples,
    _subset,
)
from alignctl.report.recommend import recorded_train


def analyze(run, *, split: str = "train", samples: int | None = None, batch_size=None,
            device="auto", metrics="standard", robustness: bool = False, eps=None, alpha=None,
            steps: int = 10, on_checkpoint: Callable[[dict, int, int], None] | None = None,
            output=None, max_memory=None, threads: int | None = None, cache=None,
            keep_samples: bool = False, _checkpoint_notes: bool = False, sketch=None,
            _measure=None, _measure_samples=None,
            _reference: bool | None = None) -> dict:  # fmt: skip
    """Analyse every checkpoint of ``run`` (an :class:`alignctl.run.Run`).

    ``output``: the logits' key or index in tuple/dict outputs (default: the config's
    ``model: {output: ...}``, else the conventions of :mod:`alignctl.geometry.outputs`);
    ``max_memory``: a batch's working-memory budget (bytes or ``"512MiB"``); ``threads``:
    CPU threads (default: :func:`alignctl.geometry.threads.auto_threads`, restored after).

    A checkpoint whose weights or outputs are not finite, or whose measurement fails
    numerically, is ``diverged`` with its ``reason``; the others are analysed. Errors that no
    checkpoint could get past (the model does not fit the data) are InputErrors.

    ``cache``: a folder (or :class:`alignctl.report.cache.Cache`) of per-checkpoint results:
    only checkpoints not found there are measured; the report then has ``cache`` counts.
    ``sketch``: see :func:`alignctl.measure` (estimated metrics then have ``metrics_error``:
    per metric, the mean over samples of the per-sample error, None for exact ones).
    ``keep_samples`` adds the per-sample values under ``samples`` (see :func:`_samples`; not
    cached: they would cover only the checkpoints measured in this call).
    ``_checkpoint_notes`` (for the cache) keeps each entry's own notes under ``_notes`` and
    its C (the width of its logits; None when not measured) under ``_classes``.
    ``_measure`` (report/sharded.py) measures the checkpoints instead of this process alone:
    called as this function would be, it returns the same report; ``_measure_samples``
    replaces :func:`alignctl.geometry.measure.measure` (same arguments and result).
    ``_reference``: measure a fresh initialisation for the inferred verdict
    (:mod:`alignctl.report.reference`; default: when no checkpoint is step 0 or step 0
    already fits the training data); a caller
    measuring part of a run (the cache, the ranks) says whether the whole run needs it.
    """
    check_options(run, samples, batch_size, steps, eps, alpha, on_checkpoint)
    flags(robustness=robustness, keep_samples=keep_samples)
    # every option that changes a number must be in this dict (the cache's key)
    opts = dict(split=split, samples=samples, batch_size=batch_size, device=device,
                metrics=metrics, robustness=robustness, eps=eps, alpha=alpha,
                steps=steps, output=output, max_memory=max_memory,
                threads=threads, sketch=sketch)  # fmt: skip
    if cache is not None and not keep_samples:
        from alignctl.report.cache import Cache, cached_analyze

        if not isinstance(cache, Cache):
            from alignctl.runs.limits import as_path

            cache = Cache(as_path(cache, "cache"))
        return cached_analyze(run, cache, _measure or analyze, opts, on_checkpoint)
    if _measure is not None:
        return _measure(run, **opts, on_checkpoint=on_checkpoint, keep_samples=keep_samples,
                        _checkpoint_notes=_checkpoint_notes, _reference=_reference)  # fmt: skip
    import alignctl.geometry.memory as memory
    from alignctl.geometry.devices import resolve_device
    from alignctl.geometry.threads import check_threads

    names = resolve_metrics(metrics)
    dev = resolve_device(device)
    if sketch is not None:
        from alignctl.geometry.sketch import resolve as check_sketch

        check_sketch(sketch, 0)
    if max_memory is not None:
        memory.parse_bytes(max_memory)
    check_threads(threads)
    spec = output_spec(run, output)
    if split not in ("train", "test"):
        raise InputError(f"unknown split {short(split)}; valid: train, test")
    data = run.load_data()
    if split == "test" and data.x_test is None:
        raise InputError("--split test: the data has no test split")
    model, tokens = None, False  # nothing to measure (a fully cached run): no model built
    if run.checkpoints or _reference:
        model = run.build_model().to(dev)
        tokens = token_inputs(model, data.x_train, dev, spec)
    if robustness and model is not None and not attackable(data, tokens):
        raise InputError("--robustness needs a test split of continuous inputs (PGD perturbs x)")
    with analysis_threads(threads, model, data.x_train, dev, tokens):
        report = _analyze(run, data, model, names, dev, split, samples, batch_size, robustness,
                          eps, alpha, steps, on_checkpoint, spec, max_memory, tokens,
                          keep_samples, sketch, _measure_samples, _reference)  # fmt: skip
    if not _checkpoint_notes:
        for entry in report["checkpoints"]:
            for private in ("_notes", "_classes"):
                entry.pop(private, None)
    return report


def _analyze(run, data, model, names, dev, split, samples, batch_size, robustness, eps, alpha,
             steps, on_checkpoint, spec, max_memory, tokens,
             keep_samples=False, sketch=None, measure_samples=None,
             want_reference=None) -> dict:  # fmt: skip
    from alignctl.report.evidence import input_offset
    from alignctl.report.recommend import recommend
    from alignctl.report.reference import (
        measure_reference,
        needs_reference,
        needs_reference_after,
    )
    from alignctl.report.steps import run_step_unit, step_unit
    from alignctl.report.verdict import chance_level, judge_entries, thresholds
    from alignctl.runs.checkpoints import is_finite_state
    from alignctl.runs.checkpoints.prefetch import prefetch

    xs, ys = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    xs, ys, kept = _subset(xs, ys, samples)
    per_sample: list[dict | None] = []
    t = thresholds(run.config.verdict)
    lo, hi = data.input_range or (float(data.x_train.min()), float(data.x_train.max()))
    eps = eps if eps is not None else 4 / 255 * (hi - lo)
    alpha = alpha if alpha is not None else eps / 2
    pgd = {"eps": eps, "alpha": alpha, "steps": steps, "input_range": (lo, hi)}
    opts = {"names": names, "dev": dev, "spec": spec, "max_memory": max_memory,
            "batch_size": batch_size, "robustness": robustness, "pgd": pgd,
            "keep_samples": keep_samples, "sketch": sketch,
            "measure": measure_samples,
            # train accuracy from measure()'s logits: the same rows (see _measure_checkpoint)
            "reuse": {"ok": None} if xs is data.x_train and not measure_samples else None,
            }  # fmt: skip
    entries, n_classes, notes, measured = [], None, [], False
    reference = None
    # None: the first checkpoint is step 0, the start unless it already fits (known below)
    want = needs_reference(run.checkpoints) if want_reference is None else want_reference

    def stand_in():
        return measure_reference(run, xs, ys, names=names, dev=dev, spec=spec,
                                 batch_size=batch_size, max_memory=max_memory,
                                 sketch=sketch)  # fmt: skip

    if want:
        reference = stand_in()
    train = recorded_train(run.config)
    # what a common offset of the inputs takes from the alignment (report/evidence.py); the
    # embeddings' offset is not the data's: tokens get none
    offset = None if tokens else input_offset(xs)
    # C is known once a checkpoint is measured (else the data's, else 2): one count per C
    chance = functools.cache(lambda c: chance_level(c, data.y_train, data.y_test))
    for i, ref in enumerate(run.checkpoints):
        t0 = time.perf_counter()
        # notes: keys ignored, EMA present... (the run's, and this checkpoint's for the cache)
        load_notes, ck_notes = [], []
        state, meta = run.load_checkpoint(model, ref, notes=load_notes)
        if i + 1 < len(run.checkpoints):  # its disk reads overlap this one's measurement
            prefetch(run.checkpoints[i + 1].path)
        finite = is_finite_state(state)
        del state
        entry = {"name": ref.name, "step": ref.step if ref.step is not None else i,
                 "metrics": {}, "metrics_std": {}, "train_accuracy": None,
                 "test_accuracy": None, "diverged": not finite,
                 "reason": None if finite else "the weights are not finite",
                 "step_unit": step_unit(meta, ref.step), "input_offset": offset}  # fmt: skip
        entry["_classes"] = None
        if finite:
            try:
                n_classes = _measure_checkpoint(entry, model, data, xs, ys, opts, ck_notes)
                entry["_classes"] = int(n_classes)
                measured = measured or not entry["diverged"]
            except InputError:
                raise
            except Exception as e:  # noqa: BLE001 (this checkpoint's trouble, not the run's)
                if not measured and not _numeric(e):  # the model cannot be measured at all
                    raise _model_error(e) from None
                entry["diverged"] = True
                entry["reason"] = f"the measurement failed: {first_line(e)}"
        per_sample.append(None if entry["diverged"] else entry.pop("_per_sample", None))
        entry.pop("_per_sample", None)
        if entry["diverged"]:
            entry["metrics"] = {k: None for k in names}
            entry["metrics_std"] = {k: None for k in names}
            ck_notes.append(f"{ref.name}: diverged: {entry['reason']}")
        notes.extend(n for n in ck_notes if n not in notes)
        entry["_notes"] = {"load": load_notes, "measure": ck_notes}
        entries.append(entry)
        if i == 0 and want is None and needs_reference_after(entry, run.config.verdict):
            reference = stand_in()
        judge_entries(entries, t=t, grokked=run.config.grokked, keep_judged=True,
                      n_classes=data.num_classes or n_classes or 2, reference=reference,
                      chance=chance(data.num_classes or n_classes or 2),
                      loss=(train or {}).get("loss"))  # fmt: skip
        entry["seconds"] = round(time.perf_counter() - t0, 4)
        if on_checkpoint:
            on_checkpoint(entry, i + 1, len(run.checkpoints))
    return {
        "alignctl_version": __version__, "path": str(run.root), "device": str(dev),
        "target": str(getattr(run, "source", None) or run.root),  # the path typed
        "split": split, "n_samples": int(len(xs)), "metric_names": names,
        "step_unit": run_step_unit([e["step_unit"] for e in entries]),
        "checkpoints": entries, "verdict": entries[-1]["verdict"] if entries else None,
        "inferred": bool(entries and entries[-1]["inferred"]),
        "recommendation": recommend(entries, t, n_classes=data.num_classes or n_classes,
                                    config_train=train,
                                    chance=chance(data.num_classes or n_classes or 2)),
        "gates": [], "passed": True,
        "pgd": {k: opts["pgd"][k] for k in ("eps", "alpha", "steps")} if robustness else None,
        # run.notes grows while checkpoints load (keys ignored, objects replaced): read it now
        "notes": list(dict.fromkeys([*getattr(run, "notes", []), *notes])),
        "regularisers": list((getattr(run.config, "train", None) or {}).get("regularisers") or []),
        "thresholds": t, "reference": reference,
        # what else the numbers depend on, for a baseline compared later (report/baseline.py)
        "measured_on": measured_on(run, data, spec),
        **({"samples": _samples(ys, kept, per_sample)} if opts["keep_samples"] else {}),
    }  # fmt: skip
