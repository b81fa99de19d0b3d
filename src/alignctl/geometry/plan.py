"""How one model is measured on x: the front (where J is taken), the chunk size within the
memory budget (:mod:`.memory`), the linear layer of the shortcut (:mod:`.linear_input`) and
whether the whole-Jacobian metrics are sketched (:mod:`.sketch`)."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch

import alignctl.geometry.memory as memory
from alignctl.errors import InputError, first_line
from alignctl.geometry.arguments import NotApplicable
from alignctl.geometry.devices import is_device_mismatch
from alignctl.geometry.independence import check_chunk, check_gradients, check_independent
from alignctl.geometry.inputs import ModelFront
from alignctl.geometry.linear_input import find_input_linear
from alignctl.geometry.sketch import resolve as sketch_k
from alignctl.geometry.svd import weight_factor
from alignctl.geometry.vjp import as_matrix

# model -> {(sample shape, dtypes, device, metric kind, output, budget): chunk size}: the
# activation probe depends on the model's structure, not its weights, so each checkpoint of
# a run (one model object, new weights) reuses it. Weak keys: no model is kept alive.
_SIZES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def applied(x: torch.Tensor) -> Iterator[None]:
    """The model's first forward passes on x: an exception of the model's own (a shape or
    dtype it cannot take) becomes one InputError naming x; out of memory, tensors on two
    devices (:func:`alignctl.geometry.measure.measure` falls back to the CPU) and alignctl's
    own InputErrors pass through."""
    try:
        yield
    except (InputError, MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as e:  # noqa: BLE001 (whatever the user's forward raises)
        if is_device_mismatch(e):
            raise
        raise NotApplicable(x, first_line(e)) from e


class Plan:
    """How one model is measured on x: the front (where J is taken), the chunk size and the
    linear layer of the shortcut, if any."""

    def __init__(self, model, x, dev, dt, *, output, batch_size, max_memory, full, sketch=None):
        self.dev, self.dt, self.rw = dev, dt, None
        self.shape = tuple(x.shape)  # the caller's input, which a bad output's error names
        if x.shape[0] == 0:
            raise InputError("no samples to measure")
        with applied(x):  # the first forward passes: a model that does not take x says so
            self._setup(model, x, output, batch_size, max_memory, full, sketch)
            # samples that interact through their gradients only, within a chunk
            check_gradients(self.front.model, self.logits, self.grads, x, dt, self.size)

    def _setup(self, model, x, output, batch_size, max_memory, full, sketch) -> None:
        dev, dt = self.dev, self.dt
        self.front = ModelFront(model, x[:2].to(dev), output)
        # samples that interact make every batched product wrong (geometry/independence.py)
        self.note = check_independent(self.front.model, self.logits, x, dt)
        probe = self.lift(x[:1])
        with torch.no_grad():  # one sample through the model here, where `applied` names x
            first = self.fn(x[:1])(probe)
        self.layer = find_input_linear(self.front.model, self.fn(x[:1]), probe) if full else None
        # only the whole-Jacobian paths size anything by C
        self.n_classes = first.shape[1] if full else None
        # K random probes per sample instead of C products (many classes; geometry/sketch.py)
        self.k = sketch_k(sketch, self.n_classes) if full else None
        if self.k:  # K >= min(C, d) probes already span J's row space: more only cost memory
            self.k = min(self.k, self.n_classes, probe[0].numel())
        # the sketch's K products in one batched autograd call (geometry/products.py) only
        # when their K-fold activation gradients fit the budget at the chunk size chosen
        self.batched = True
        if batch_size is not None:  # a positive int (geometry/arguments.py)
            self.size = batch_size
            return
        key = (tuple(x.shape[1:]), x.dtype, dt, str(dev), full, output, max_memory, self.k)
        cached = _SIZES.get(self.front.model, {}).get(key)
        if cached is not None:  # the same structure measured before (every checkpoint)
            self.size, self.batched = cached
            return
        if x.shape[0] >= 2:
            acts = memory.activation_bytes(lambda m: self.fn(x[:m]), lambda m: self.lift(x[:m]))
        else:
            acts = memory.saved_bytes(self.fn(x[:1]), probe)
        d, item = probe[0].numel(), probe.element_size()
        if self.k:  # K-row blocks (Y, Q, probes) and the double-VJP graph (twice the activations)
            keep, acts = 2 * (3 * self.k + 4) * d * item, 2 * acts
        else:
            keep = 2 * self.n_classes * d * item if full else 2 * d * item
        budget = memory.budget(max_memory, self.dev)
        self.size = memory.chunk_size(budget, activations=acts, input_bytes=d * item,
                                      keep_bytes=keep)  # fmt: skip
        if self.k:  # batched: the gradients of the activations for K cotangents at once
            wide = memory.sample_bytes(activations=acts + self.k * acts // 4,
                                       input_bytes=d * item, keep_bytes=keep)  # fmt: skip
            self.batched = wide * min(self.size, x.shape[0]) <= budget
        _SIZES.setdefault(self.front.model, {})[key] = (self.size, self.batched)

    def weight_factor(self) -> torch.Tensor:
        """R_w^T of the shortcut's W (W^T = Q_w R_w), once per measurement: W is fixed."""
        if self.rw is None:
            self.rw = weight_factor(self.layer.weight.detach())
        return self.rw

    def logits(self, xb):
        """The (m, C) logits of raw inputs xb, as the chunks compute them."""
        return self.fn(xb)(self.lift(xb))

    def _tracked(self, xb):
        """(the differentiated tensor of raw inputs xb, requiring a gradient, and the (m, C)
        logits from a forward pass that records a graph as the chunks' do)."""
        inp = self.lift(xb).detach().requires_grad_(True)
        with torch.enable_grad():
            return inp, self.fn(xb)(inp)

    def grads(self, xb, v):
        """The (m, d) gradient of sum(v * logits) at the differentiated tensor of xb; None
        when the logits do not depend on it."""
        inp, out = self._tracked(xb)
        if not out.requires_grad:
            return None
        (g,) = torch.autograd.grad((out * v.to(out)).sum(), inp, allow_unused=True)
        return None if g is None else g.reshape(g.shape[0], -1)

    def check_chunk(self, xb, out) -> None:
        """InputError when a chunk's logits ``out`` change with the chunk's size
        (:func:`~alignctl.geometry.independence.check_chunk`)."""
        check_chunk(self.tracked_logits, xb, out, self.dt)

    def tracked_logits(self, xb):
        """The (m, C) logits of raw inputs xb, detached, from a forward pass that records a
        graph as the chunks' do (the differentiated tensor requires a gradient)."""
        return self._tracked(xb)[1].detach()

    def lift(self, xb):
        return self.front.lift(xb, self.dev, self.dt)

    def fn(self, xb):
        f = self.front.fn(xb, self.dev)
        return lambda inp: as_matrix(f(inp), inp.shape[0], self.shape)

    def chunks(self, x):
        for start in range(0, x.shape[0], self.size):
            xb = x[start : start + self.size]
            yield start, xb, self.fn(xb), self.lift(xb)
