"""Loading a state dict into a model: find where the model's weights sit, then load strictly.

Training code saves more than the model: a LightningModule's ``state_dict`` holds ``model.*``
beside ``criterion.weight`` (a class-weighted loss), ``ema.*``, ``metrics.*``; an
``AveragedModel`` adds ``n_averaged``. Candidates are the state dict as is (prefix ``""``) and
every dotted prefix under which some model key appears (``model.``, ``net.backbone.``,
``model_ema.module.``). A candidate *fits* when every key of the model is found under it (or
through a tie: :func:`tied_names`, safetensors aliases) with the model's shape, and nothing
under it is unexpected. Keys outside the chosen prefix are ignored, with a note naming them,
except under the bare prefix ``""``, where only whole modules the model does not have (first
name not a model child, not a number: never a truncated ``Sequential``) may be ignored.
Among fits: an EMA-named prefix only with ``weights="ema"``; the fewest ignored keys; identical
copies are one fit; a genuine choice is an error asking for ``--state-key``. When nothing fits,
the error names the culprit keys of the closest candidate."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from alignctl.errors import InputError
from alignctl.runs.checkpoints.fit_messages import SHOW as _SHOW
from alignctl.runs.checkpoints.fit_messages import few as _few
from alignctl.runs.checkpoints.fit_messages import fit_notes, no_fit
from alignctl.runs.checkpoints.hf_names import retry_renamed
from alignctl.runs.checkpoints.select import is_ema_name


@dataclass
class _Fit:
    prefix: str
    into: str = ""  # the model's submodule the checkpoint holds (a factory's wrapper: "m.")
    kept: dict = field(default_factory=dict)  # model key -> tensor
    source: dict = field(default_factory=dict)  # model key -> the state key it comes from
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)
    hits: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shapes)

    def problem(self) -> str:
        where = f" under prefix {self.prefix!r}" if self.prefix else ""
        parts = []
        if self.missing:
            parts.append(f"missing keys{where} {_few(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys {_few(self.unexpected)}")
        parts += self.shapes[:_SHOW]
        return "; ".join(parts)


def tied_names(model: torch.nn.Module) -> dict[str, list[str]]:
    """Each state-dict key -> the other keys sharing its storage (``lm_head.weight`` tied to
    ``wte.weight``): a checkpoint that stores one of them holds them all."""
    groups: dict[tuple, list[str]] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if t.numel() and t.device.type != "meta":  # meta tensors all have data_ptr 0
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
            groups.setdefault(key, []).append(name)
    return {n: [m for m in g if m != n] for g in groups.values() if len(g) > 1 for n in g}


def optional_keys(model: torch.nn.Module) -> set[str]:
    """Keys a checkpoint may lack: batch norms' ``num_batches_tracked``, absent from checkpoints
    of PyTorch < 0.4.1 and converted ones. ``load_state_dict`` then keeps the model's own (its
    batch norms fill it in); it only sets the momentum of training with momentum=None, never
    an eval-mode output."""
    from torch.nn.modules.batchnorm import _NormBase

    return {
        f"{name}.num_batches_tracked".lstrip(".")
        for name, m in model.named_modules()
        if isinstance(m, _NormBase) and m.num_batches_tracked is not None
    }


def _fit(state, prefix, target, ties, aliases, optional=frozenset(), into="") -> _Fit:
    """How ``state``'s keys under ``prefix`` fit the model's under ``into`` (usually "")."""
    fit = _Fit(prefix, into)
    names = {k[len(into) :].split(".", 1)[0] for k in target if k.startswith(into)}
    for key in state:
        if not key.startswith(prefix):
            fit.ignored.append(key)
            continue
        rest = key[len(prefix) :]
        if into + rest in target:
            fit.kept[into + rest], fit.source[into + rest] = state[key], key
            continue
        head = rest.split(".", 1)[0]
        # Under "" only whole submodules the model lacks may be ignored (criterion.weight);
        # a bare key or a numbered one (a Sequential's next layer) is unexpected.
        whole_module = "." in rest and head not in names and not head.isdigit()
        if prefix == "" and (whole_module or rest == "n_averaged"):  # AveragedModel's counter
            fit.ignored.append(key)
        else:
            fit.unexpected.append(key)
    for name in target:
        if name in fit.kept:
            continue
        stored = [prefix + t[len(into) :] for t in ties.get(name, []) if t.startswith(into)]
        if name.startswith(into):
            stored.append(aliases.get(prefix + name[len(into) :], ""))
        source = next((s for s in stored if s in state), None)
        if source is not None:
            fit.kept[name], fit.source[name] = state[source], source
        elif name not in optional:
            fit.missing.append(name)
    fit.hits = len(fit.kept)
    for name, t in target.items():
        if name in fit.kept and tuple(fit.kept[name].shape) != tuple(t.shape):
            got = tuple(fit.kept[name].shape)
            fit.shapes.append(
                f"shape mismatch for {fit.source[name]}: checkpoint {got} vs model {tuple(t.shape)}"
            )
    return fit


def _intos(target: dict) -> list[str]:
    """``""`` and each dotted prefix holding more than half of the model's keys: the
    submodules a factory's wrapper nests the model in (``m.`` of ``m.bert.*``,
    ``m.classifier.*``). A fit needs every key; a wrapper's own key outside (``scale``) is
    then named as missing rather than every key of the checkpoint."""
    counts: dict[str, int] = {}
    for key in target:
        parts = key.split(".")[:-1]
        for i in range(1, len(parts) + 1):
            p = ".".join(parts[:i]) + "."
            counts[p] = counts.get(p, 0) + 1
    return [""] + sorted((p for p, c in counts.items() if 2 * c > len(target)), key=len)


def _prefixes(state: dict, target: dict) -> list[tuple[str, str]]:
    """(prefix, into) pairs: ``("", "")`` and each dotted prefix under which at least one
    model key appears, as it is or under one of :func:`_intos`."""
    found, intos = {("", "")}, _intos(target)
    for key in state:
        parts = key.split(".")
        for i in range(len(parts)):
            rest, prefix = ".".join(parts[i:]), ".".join(parts[:i]) + "." if i else ""
            for into in intos:  # prefix "a.m." into "m." is the same as "a." into ""
                if into + rest in target and not (into and prefix.endswith(into)):
                    found.add((prefix, into))
    return sorted(found, key=lambda p: (p[0].count("."), len(p[1]), p))


class NeedValues(Exception):
    """Choosing needs the tensors' values, and the state holds only their shapes (meta)."""


def _same(a: _Fit, b: _Fit) -> bool:
    if any(t.is_meta for t in (*a.kept.values(), *b.kept.values())):
        raise NeedValues
    return all(torch.equal(a.kept[k], b.kept[k]) for k in a.kept)


def load_weights(
    model: torch.nn.Module,
    state_dict: dict,
    source: str,
    *,
    aliases: dict[str, str] | None = None,
    mode: str = "raw",
    prefix: str | None = None,
) -> list[str]:
    """Load ``state_dict`` into ``model`` (cast to the model's dtypes); returns notes (keys
    ignored, EMA copy present). ``mode``: ``raw`` (not an EMA-named prefix), ``ema`` (an
    EMA-named prefix) or ``prefix`` (exactly ``prefix``). InputError when nothing fits."""
    kw = dict(aliases=aliases, mode=mode, prefix=prefix)
    chosen, notes = choose_weights(model, state_dict, source, **kw)
    target = model.state_dict()
    cast = {k: v.to(dtype=target[k].dtype) for k, v in chosen.kept.items()}
    model.load_state_dict(cast, strict=True)
    return notes


def choose_weights(model, state_dict, source, *, aliases=None, mode="raw", prefix=None):
    """(the chosen :class:`_Fit`, notes) as :func:`load_weights` chooses, without loading:
    shapes and names only, so ``state_dict`` may hold meta tensors (:mod:`.stream`), except
    when identical-looking copies must be compared (:class:`NeedValues`); then under the
    names ``from_pretrained`` would give the keys (:mod:`.hf_names`) if none fit."""
    kw = dict(aliases=aliases, mode=mode, prefix=prefix)
    return retry_renamed(_choose_weights, model, state_dict, source, **kw)


def _choose_weights(model, state_dict, source, *, aliases=None, mode="raw", prefix=None):
    target = model.state_dict()
    ties, aliases = tied_names(model), aliases or {}
    opt = optional_keys(model)
    fits = [_fit(state_dict, p, target, ties, aliases, opt, into)
            for p, into in _prefixes(state_dict, target)]  # fmt: skip
    if mode == "prefix":
        if not any(k.startswith(prefix) for k in state_dict):
            heads = sorted({k.split(".", 1)[0] for k in state_dict})
            raise InputError(
                f"checkpoint {source} has no key or prefix {prefix.rstrip('.')!r} "
                f"(its state dict's first names: {_few(heads)})"
            )
        fits = [_fit(state_dict, prefix, target, ties, aliases, opt, q) for q in _intos(target)]
    good = [f for f in fits if f.ok]
    ema = [f for f in good if is_ema_name(f.prefix)]
    raw = [f for f in good if f not in ema]
    chosen = _choose(ema if mode == "ema" else good if mode == "prefix" else raw, source)
    if chosen is None:
        raise no_fit(fits, good, mode, prefix, source)
    _check_ties(chosen, ties, target, source)
    return chosen, fit_notes(chosen, ema if mode == "raw" else [], mode)


def _check_ties(fit: _Fit, ties: dict, target: dict, source: str) -> None:
    """Tied keys stored with different values (an untied model's save) are an error: loading
    both keeps whichever is copied last, neither model."""
    for name, others in ties.items():
        for other in others:
            a, b = fit.source.get(name), fit.source.get(other)
            if name > other or a is None or b is None or a == b:
                continue
            x, y, dtype = fit.kept[name], fit.kept[other], target[name].dtype
            if x.is_meta or y.is_meta:
                raise NeedValues
            if not torch.equal(x.to(dtype), y.to(dtype)):
                raise InputError(
                    f"checkpoint {source} stores different values for {a} and {b}, which the "
                    "model ties (one shared tensor): it was saved from an untied model; build "
                    "the model untied (Hugging Face: tie_word_embeddings=False)"
                )


def _choose(fits: list[_Fit], source: str) -> _Fit | None:
    if not fits:
        return None
    fewest = min(len(f.ignored) for f in fits)
    best = [f for f in fits if len(f.ignored) == fewest]
    distinct = [f for i, f in enumerate(best) if not any(_same(f, g) for g in best[:i])]
    if len(distinct) > 1:
        names = ", ".join(repr(f.prefix.rstrip(".")) for f in distinct[:_SHOW])
        raise InputError(
            f"checkpoint {source} holds several different copies of the model's weights "
            f"(under {names}); choose one with --state-key KEY"
        )
    return best[0]
