"""How alignctl feeds a model: where the Jacobian is taken, which dtype the data gets, and
that the model never changes the data.

Three kinds of model front (chosen once per model and data, :class:`ModelFront`):

- ``protocol``: the model implements ``embed(tokens) -> e`` and ``forward_embedded(e)``; the
  Jacobian is taken at e (paper, appendix E);
- ``embedding``: integer inputs that an ``nn.Embedding`` of the model reads (found by running
  the model once on two samples with hooks): the Jacobian is taken at that embedding's
  output, which a forward hook replaces with the differentiated tensor; tokens are never cast;
- ``plain``: everything else. Integer (``uint8`` images, counts) and boolean inputs that no
  embedding reads are continuous data: cast to the model's floating dtype.

Every call gets a copy of the inputs (models that run ``x /= 255`` or ``x.clamp_(0, 1)`` in
``forward`` modify the copy, never alignctl's data), and the differentiated tensor is a leaf
that the model only sees through ``clone()``, so in-place operations work under autograd.
``torch.compile``'d modules are measured through their original module (eager kernels, hooks
that fire). Outputs go through :func:`alignctl.geometry.outputs.select_output`.
"""

from __future__ import annotations

import torch
from torch import nn

from alignctl.errors import InputError
from alignctl.geometry.indices import PROTOCOL as OPT_IN
from alignctl.geometry.indices import checked, embeddings, explain_integer_failure
from alignctl.geometry.outputs import ambiguous, check_spec, select_output
from alignctl.geometry.transfer import to_device
from alignctl.geometry.wrappers import unwrap  # torch.compile, DataParallel, DDP


class _Stop(Exception):
    """Ends a probe forward pass as soon as the hook has seen what it needs."""


def is_integer(x: torch.Tensor) -> bool:
    return not x.is_floating_point() and not x.is_complex()


def _reads(arg, x: torch.Tensor) -> bool:
    """Whether a module's input is x itself (or a view of it, or an exact copy)."""
    if not isinstance(arg, torch.Tensor):
        return False
    if arg.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        return True
    return arg.numel() == x.numel() and torch.equal(arg.reshape(-1).to(x.dtype), x.reshape(-1))


def find_token_embedding(
    model: nn.Module, tokens: torch.Tensor, found_embeddings: list | None = None
) -> tuple[nn.Module, int] | None:
    """(the ``nn.Embedding`` that reads ``tokens``, which of its calls in a forward pass), or
    None when no embedding reads them. An embedding given ids out of its range: InputError
    (:mod:`.indices`; not "the model fails on integers", which would make them floats).
    ``found_embeddings``: :func:`~.indices.embeddings` of the model, when the caller has it."""
    if found_embeddings is None:
        found_embeddings = embeddings(model)
    if not found_embeddings:
        return None
    probe = tokens.clone()
    calls: dict[nn.Module, int] = {}
    found: list[tuple[nn.Module, int]] = []

    def hook(mod, args, out):
        calls[mod] = calls.get(mod, 0) + 1
        if args and _reads(args[0], probe):
            found.append((mod, calls[mod] - 1))
            raise _Stop

    handles = [m.register_forward_hook(hook) for _, m in found_embeddings]
    try:
        with torch.no_grad(), checked(model, probe, found_embeddings):
            model(probe)
    except (_Stop, InputError) as e:
        if isinstance(e, InputError):
            raise
    except Exception:  # the model fails on integers before any embedding: not tokens
        return None
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None


def float_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


class ModelFront:
    """A model with its input convention decided for data like ``x`` (module docstring)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, output=None):
        from alignctl.geometry.devices import eval_mode

        self.model = unwrap(model)
        self.output = check_spec(output)
        self.embedding, self.call = None, 0
        self.output_note: str | None = None  # outputs.ambiguous, from the first forward pass
        self.embeddings = embeddings(self.model)  # each checks its indices (.indices)
        if hasattr(self.model, "embed") and hasattr(self.model, "forward_embedded"):
            self.kind = "protocol"
        elif is_integer(x) and x.dtype != torch.bool:
            with eval_mode(self.model):  # no dropout draws, no batch-norm statistics moved
                found = find_token_embedding(self.model, x[:2], self.embeddings)
            self.kind = "embedding" if found else "plain"
            if found:
                self.embedding, self.call = found
        else:
            self.kind = "plain"

    @property
    def tokens(self) -> bool:
        """Whether the raw inputs stay integers (tokens) rather than becoming floats."""
        return self.kind != "plain"

    def logits(self, out) -> torch.Tensor:
        if self.output_note is None:
            self.output_note = ambiguous(out, self.output) or ""
        return select_output(out, self.output)

    def raw(self, xb: torch.Tensor, device=None, copy: bool = True) -> torch.Tensor:
        """A private copy of raw inputs on ``device``: tokens as they are, other data in the
        model's floating dtype (``copy=False``: xb itself where it is that already, for a
        model that never writes its input, :mod:`alignctl.geometry.readonly`)."""
        device = device if device is not None else xb.device
        if self.tokens:
            return to_device(xb, device, copy=copy)
        return to_device(xb, device, float_dtype(self.model), copy=copy)

    def cast(self, x: torch.Tensor, device=None) -> torch.Tensor:
        """x on ``device`` in the dtype the model consumes (no copy when it already is)."""
        device = device if device is not None else x.device
        return to_device(x, device, None if self.tokens else float_dtype(self.model))

    def __call__(self, xb: torch.Tensor, device=None, copy: bool = True) -> torch.Tensor:
        """Logits for raw inputs (no gradient bookkeeping of its own); ``copy``: see raw."""
        return self._run(xb, lambda: self.model(self.raw(xb, device, copy)))

    def _run(self, xb: torch.Tensor, call):
        """The logits of ``call()`` (a forward pass on inputs made from the raw xb) with every
        embedding's indices checked; a model that fails on integer data cast to floats but
        runs on the integers: InputError saying so (:mod:`.indices`)."""
        try:
            with checked(self.model, xb, self.embeddings):
                return self.logits(call())
        except Exception as e:
            why = None
            if self.kind == "plain" and is_integer(xb):
                why = explain_integer_failure(self.model, xb, e, float_dtype(self.model))
            if why is None:
                raise
            raise why from e

    def _hook(self, replace: torch.Tensor | None, held: list):
        """A forward hook on the token embedding: at its ``self.call``-th call, record its
        output (``held``) or replace it by ``replace.clone()``."""
        count = [0]

        def hook(mod, args, out):
            count[0] += 1
            if count[0] - 1 != self.call:
                return None
            if replace is None:
                held.append(out)
                return None
            return replace.clone()

        return self.embedding.register_forward_hook(hook)

    def lift(self, xb: torch.Tensor, device, dtype) -> torch.Tensor:
        """The tensor the Jacobian is taken at, for raw inputs xb: (m, ...), detached."""
        if self.kind == "plain":  # the model sees clones of it (fn), never it
            return to_device(xb, device, dtype).detach()
        tokens = to_device(xb, device, copy=True)
        with torch.no_grad():
            if self.kind == "protocol":
                with checked(self.model, tokens, self.embeddings):
                    return self.model.embed(tokens).detach().to(dtype)
            held: list = []
            handle = self._hook(None, held)
            try:
                with checked(self.model, tokens, self.embeddings):
                    self.model(tokens)
            finally:
                handle.remove()
        if not held:
            raise InputError(f"the model's embedding was not called on the tokens; {OPT_IN}")
        return held[0].detach().to(dtype)

    def fn(self, xb: torch.Tensor, device):
        """f(inp) -> logits, differentiable in inp (what :meth:`lift` returned); the model only
        sees copies of inp, so in-place operations in its forward are harmless."""
        if self.kind == "plain":
            return lambda inp: self._run(xb, lambda: self.model(inp.clone()))
        if self.kind == "protocol":
            return lambda inp: self._run(xb, lambda: self.model.forward_embedded(inp.clone()))
        tokens = to_device(xb, device, copy=True)

        def f(inp):
            handle = self._hook(inp, [])
            try:
                return self._run(tokens, lambda: self.model(tokens.clone()))
            finally:
                handle.remove()

        return f

    def forward_train(self, xb: torch.Tensor, input_grad: bool):
        """(differentiable input, logits) for a training step: the embedding output for token
        models (it stays in the graph, so the embedding is trained), else the float input
        (a leaf requiring grad when ``input_grad``)."""
        if self.kind == "protocol":
            with checked(self.model, xb, self.embeddings):
                e = self.model.embed(xb)
            return e, self._run(xb, lambda: self.model.forward_embedded(e))
        if self.kind == "embedding":
            held: list = []
            handle = self._hook(None, held)
            try:
                out = self._run(xb, lambda: self.model(xb.clone()))
            finally:
                handle.remove()
            return held[0], out
        xb = self.cast(xb)
        if not input_grad:  # a batch is a fresh tensor (indexed out of the data): the
            return xb, self.logits(self.model(xb))  # model may modify it in place
        xb = xb.detach().requires_grad_(True)
        return xb, self.logits(self.model(xb.clone()))
