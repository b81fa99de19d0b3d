"""Incremental analysis: per-checkpoint results cached on disk, so a re-run of ``alignctl
analyze`` (a nightly CI job, ``--follow``) only measures checkpoints it has not seen.

An entry is keyed by the SHA-256 of everything its numbers depend on:

- the checkpoint's bytes (a file, or every file of a Hugging Face folder, by name);
- the data (the bytes, dtypes and shapes of x/y train/test, ``num_classes``, ``input_range``,
  the task's ``meta``);
- the model section of the config (and the bytes of a factory's file, or of the module that
  registered a user's architecture);
- the metric set (with the bytes of the module that registered a user's metric) and the
  options (split, samples, batch size, resolved device, robustness and its PGD parameters);
- alignctl's version and a fingerprint of its source files (a changed metric never reads
  numbers computed by the old code).

A file ``DIR/<key>.json`` holds the entry without its verdict (verdicts read the entries
before them, so they are recomputed on every run), the notes its checkpoint gave when it was
loaded and measured (keys ignored, a fallback taken: a cached run says what an uncached one
says, in the same order) and the SHA-256 of the entry's canonical JSON. An entry is used
only when the file parses as strict JSON, names the same key, matches its checksum and has
the report's entry shape with exactly the requested metrics; anything else is recomputed and
rewritten (atomically, :mod:`alignctl.runs.atomic`). Never trusted, never fatal: a folder
that cannot be written only turns the cache off, with a note (none for the default folder,
``RUN/.alignctl-cache``, which the user did not ask for).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import torch

from alignctl._version import __version__
from alignctl.errors import InputError
from alignctl.report.cache_entries import valid_entry, valid_reference
from alignctl.report.cache_keys import (
    canonical,
    code_fingerprint,
    content_digest,
    data_digest,
    key_text,
    metrics_material,
    model_material,
    sha,
)
from alignctl.report.recommend import recorded_train
from alignctl.train.jsonio import loads_strict

CACHE_DIR = ".alignctl-cache"
FORMAT = 4  # entries carry: 2, their notes (_notes); 3, C (_classes); 4, input_offset
# An entry is one checkpoint's summary (per-sample values only with keep_samples: ~20 bytes a
# value); a file far beyond that was not written here and is recomputed, not parsed.
MAX_ENTRY_BYTES = 64 << 20


def default_cache(run) -> Cache | None:
    """The cache ``alignctl analyze`` uses unless told otherwise: ``RUN/.alignctl-cache`` (a
    folder that cannot be written turns it off without a note); None when the environment
    says ``ALIGNCTL_CACHE=off`` (or 0, no, false)."""
    import os

    if os.environ.get("ALIGNCTL_CACHE", "").strip().lower() in ("off", "0", "no", "false"):
        return None
    root = Path(getattr(run, "root", ""))
    return Cache(root / CACHE_DIR, quiet=True) if root.is_dir() else None


class Cache:
    """Entries in ``folder`` (None: in memory only, for one process); counts hits and misses.
    ``quiet``: a folder that cannot be written turns the cache off without a note (the
    default location, which the user did not ask for)."""

    def __init__(self, folder: str | Path | None, *, quiet: bool = False) -> None:
        self.folder = None if folder is None else Path(folder)
        self.quiet = quiet
        self.hits = self.misses = self.invalid = 0
        self.notes: list[str] = []
        self._memory: dict[str, dict] = {}

    def stats(self, since: tuple[int, int, int] = (0, 0, 0)) -> dict:
        """Counts since ``since`` (an earlier :meth:`counts`), and the folder."""
        now = self.counts()
        hits, misses, invalid = (a - b for a, b in zip(now, since, strict=True))
        return {"hits": hits, "misses": misses, "invalid": invalid,
                "dir": None if self.folder is None else str(self.folder)}  # fmt: skip

    def counts(self) -> tuple[int, int, int]:
        return self.hits, self.misses, self.invalid

    def get(self, key: str, names: list[str], valid=None) -> dict | None:
        """The entry under ``key`` (a copy), counted as a hit or miss; ``valid``: a check of
        another kind of entry (the reference's), which is not counted."""
        entry = self._memory.get(key)
        if entry is None and self.folder is not None:
            entry = self._read(key, names, valid or valid_entry)
        if valid is not None:
            return None if entry is None else json.loads(json.dumps(entry))
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(json.dumps(entry))  # a copy: callers add verdicts

    def _read(self, key: str, names: list[str], valid) -> dict | None:
        path = self.folder / f"{key}.json"
        if not path.is_file():
            return None
        try:
            if path.stat().st_size > MAX_ENTRY_BYTES:  # not ours: never read into memory
                raise ValueError("too large")
            doc = loads_strict(path.read_text(encoding="utf-8"))
            entry = doc["entry"]
            ok = (doc.get("format") == FORMAT and doc.get("key") == key
                  and doc.get("sha256") == sha(canonical(entry))
                  and valid(entry, names))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            ok = False
        if not ok:
            self.invalid += 1
            return None
        return entry

    def put(self, key: str, entry: dict, material: dict) -> None:
        entry = {k: v for k, v in entry.items() if k not in ("verdict", "inferred", "evidence")}
        self._memory[key] = entry
        if self.folder is None:
            return
        from alignctl.runs.atomic import atomic_write_text

        # what the key digested, for a reader; strict JSON (a factory's .inf as "Infinity")
        shown = json.loads(key_text(material), parse_constant=str)
        doc = {"format": FORMAT, "key": key, "sha256": sha(canonical(entry)),
               "material": shown, "entry": entry}  # fmt: skip
        try:
            atomic_write_text(self.folder / f"{key}.json", canonical(doc) + "\n")
        except OSError as e:
            if not self.quiet:
                self.notes.append(f"cache off: cannot write {self.folder} ({e.strerror or e})")
            self.folder = None


def cached_analyze(run, cache: Cache, analyze_fn, options: dict, on_checkpoint=None) -> dict:
    """``analyze_fn(run, **options)`` measuring only the checkpoints not in ``cache``; every
    verdict and the recommendation are then recomputed over all entries, in step order."""
    from alignctl.geometry.devices import resolve_device
    from alignctl.report.analysis import resolve_metrics

    names = resolve_metrics(options.get("metrics"))
    context = {
        "alignctl": __version__, "code": code_fingerprint(), "torch": torch.__version__,
        "data": data_digest(run.load_data()),
        "model": model_material(run), "metrics": names,
        "metric_sources": metrics_material(names),
        # which weights are read (raw / EMA copy / a state key) changes every number
        "weights": getattr(run, "weights", None), "state_key": getattr(run, "state_key", None),
        "options": {**{k: v for k, v in options.items() if k != "metrics"},
                    "device": str(resolve_device(options.get("device")))},
    }  # fmt: skip
    total, since = len(run.checkpoints), cache.counts()
    found = list(getattr(run, "notes", []))  # discovery's, before any checkpoint is loaded
    keyed, entries, missing = [], {}, []
    for ref in run.checkpoints:
        material = {**context, "checkpoint": content_digest(ref.path)}
        key = sha(key_text(material))
        keyed.append(key)
        hit = entries.get(key) or cache.get(key, names)
        if hit is None:
            missing.append((ref, key, material))
        else:
            entries[key] = hit
            if on_checkpoint:
                on_checkpoint(hit, len(keyed) - len(missing), total)
    done = total - len(missing)

    def progress(entry, i, n):
        if on_checkpoint:
            on_checkpoint(entry, done + i, total)

    sub = dataclasses.replace(run, checkpoints=[ref for ref, _, _ in missing])
    from alignctl.report.reference import SEED, needs_reference, needs_reference_after

    # the whole run's start decides, not the missing checkpoints'; a cached step 0 says
    # whether it is the start, a missing one is the sub-run's first and decides there
    want = needs_reference(run.checkpoints)
    if want is None and keyed[0] in entries and run.checkpoints[0].step == 0:
        want = needs_reference_after({**entries[keyed[0]], "step": 0}, run.config.verdict)
    # the stand-in (seeded: the same numbers for the same model, data and options) is kept
    # too, so that a fully cached run builds no model
    ref_material = {**context, "reference": SEED}
    ref_key = sha(key_text(ref_material))
    known = cache.get(ref_key, names, valid=valid_reference) if want else None
    report = analyze_fn(sub, **options, on_checkpoint=progress, _checkpoint_notes=True,
                        _reference=False if known else want)  # fmt: skip
    if known:
        report["reference"] = known["reference"]
    elif want or report.get("reference") is not None:
        cache.put(ref_key, {"reference": report.get("reference")}, ref_material)
    for (ref, key, material), entry in zip(missing, report["checkpoints"], strict=True):
        # rewritten since it was keyed: the numbers may be the new bytes', not the key's
        if _unchanged(ref.path, material["checkpoint"]):
            cache.put(key, entry, material)
        entries[key] = {
            k: v for k, v in entry.items() if k not in ("verdict", "inferred", "evidence")
        }
    merged = []
    for i, (ref, key) in enumerate(zip(run.checkpoints, keyed, strict=True)):
        step = i if ref.step is None else ref.step
        merged.append({**copy.deepcopy(entries[key]), "name": ref.name, "step": step})
    # the notes in the order an uncached run gives them: discovery, loading, measurement
    by_ck = [e.pop("_notes") for e in merged]
    classes = [e.pop("_classes") for e in merged]
    ordered = (
        found + [t for n in by_ck for t in n["load"]] + [t for n in by_ck for t in n["measure"]]
    )
    report["notes"] = list(dict.fromkeys(ordered))
    rejudge(run, report, merged, classes)
    report["checkpoints"] = merged
    from alignctl.report.steps import run_step_unit

    report["step_unit"] = run_step_unit([e.get("step_unit") for e in merged])
    report["cache"] = cache.stats(since)  # this call's hits and misses (its measurements)
    report["notes"] = list(report.get("notes", [])) + cache.notes
    return report


def _unchanged(path, digest: str) -> bool:
    """Whether the checkpoint at ``path`` still has the content ``digest`` (memoised on its
    identity: free when unchanged); False when it cannot be read any more."""
    try:
        return content_digest(path) == digest
    except InputError:
        return False


def rejudge(run, report: dict, entries: list[dict], classes: list) -> None:
    """The verdicts of ``entries`` (the whole run's, in step order, measured in parts: cached,
    or dealt over ranks) judged again together, and the report's verdict and recommendation,
    as one process gives them. C: the data's, else the width of the logits the last measured
    checkpoint gave (``classes``: each entry's, None where not measured), as
    :func:`alignctl.report.analysis.analyze` finds it; no model is built."""
    from alignctl.report.recommend import recommend
    from alignctl.report.verdict import chance_level, judge_entries, thresholds

    t, train = thresholds(run.config.verdict), recorded_train(run.config)
    data = run.load_data()
    c = data.num_classes or next((k for k in reversed(classes) if k is not None), None)
    chance = chance_level(c or 2, data.y_train, data.y_test) if entries else None
    judge_entries(entries, t=t, grokked=run.config.grokked, n_classes=c or 2,
                  reference=report.get("reference"), chance=chance,
                  loss=(train or {}).get("loss"))  # fmt: skip
    report["verdict"] = entries[-1]["verdict"] if entries else None
    report["inferred"] = bool(entries and entries[-1]["inferred"])
    report["recommendation"] = recommend(entries, t, n_classes=c, config_train=train,
                                         chance=chance)  # fmt: skip
