"""What loading a checkpoint says (:mod:`alignctl.runs.checkpoints.loading`): the notes on the
weights chosen (keys ignored, a submodule, EMA weights) and the error when none fit, naming at
most :data:`SHOW` keys of each kind."""

from __future__ import annotations

from alignctl.errors import InputError

SHOW = 4  # keys named in a message


def fit_notes(fit, ema: list, mode: str) -> list[str]:
    """The notes on the chosen fit (:class:`~alignctl.runs.checkpoints.loading._Fit`): keys
    ignored, a submodule loaded into, EMA weights used or present (``ema``)."""
    notes = []
    ignored = sorted(k for k in fit.ignored if k != "n_averaged")  # not the file's hash order
    if "n_averaged" in fit.ignored:
        notes.append("weights of an averaged model (AveragedModel: n_averaged ignored)")
    if ignored:
        kept = f"the model's keys under {fit.prefix!r}" if fit.prefix else "the model's keys"
        groups = sorted({k.split(".", 1)[0] + ("." if "." in k else "") for k in ignored})
        notes.append(
            f"loaded {kept}; ignored {len(ignored)} other key(s) of {', '.join(groups[:SHOW])}"
            f"{' ...' if len(groups) > SHOW else ''} ({few(ignored)})"
        )
    if fit.into:
        notes.append(f"the checkpoint holds the weights of the model's submodule "
                     f"{fit.into.rstrip('.')!r}: loaded there")  # fmt: skip
    if mode == "ema":
        notes.append(f"analysed the EMA weights under {fit.prefix!r}")
    elif ema:
        notes.append(
            f"checkpoints also hold EMA weights under {ema[0].prefix!r} (not used); analyse "
            "them with --weights ema"
        )
    return notes


def no_fit(fits, good, mode, prefix, source) -> InputError:
    """Why no candidate fits (``good``: the fits before the weights mode chose), naming the
    culprit keys of the closest candidate."""
    head = f"checkpoint {source} does not fit the model"
    if mode == "ema" and good:
        return InputError(
            f"{head} as EMA weights: no EMA copy found (looked for keys and prefixes named ema, "
            "swa, averaged, shadow, polyak); the raw weights fit: drop --weights ema, or name "
            "the copy with --state-key KEY"
        )
    if mode == "raw" and good:
        return InputError(
            f"{head}: only an EMA copy (under {good[0].prefix!r}) fits; analyse it with "
            "--weights ema"
        )
    if mode == "prefix":
        fit = fits[0]
        return InputError(f"{head} under --state-key {prefix.rstrip('.')!r}: {fit.problem()}")
    # The closest candidate: most model keys found, then fewest problems.
    fit = max(fits, key=lambda f: (f.hits, -len(f.missing) - len(f.unexpected) - len(f.shapes)))
    extra = ""
    if not fit.prefix:  # nothing fits: keys of other modules are not ignorable, name them
        fit.unexpected += fit.ignored
    elif fit.ignored:
        extra = f"; keys outside {fit.prefix!r} would be ignored ({few(fit.ignored)})"
    if fit.shapes and not fit.missing and not fit.unexpected:  # every key, other sizes
        extra += (
            "; the checkpoint is this model at other sizes: build it with the sizes it was "
            "trained with (a factory's arguments: model: {factory: FILE.py:FN, kwargs: {...}} "
            "in alignctl.yaml or a --config file; an arch's parameters likewise)"
        )
    return InputError(f"{head}: {fit.problem()}{extra}")


def few(keys: list[str]) -> str:
    """At most SHOW of ``keys``, then how many more."""
    more = f", ... ({len(keys) - SHOW} more)" if len(keys) > SHOW else ""
    return ", ".join(keys[:SHOW]) + more
