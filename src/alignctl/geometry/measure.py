"""Batched input-output Jacobians and per-sample metrics (paper sections 2-3).

For a classifier f: R^d -> R^C and an input x (flattened to R^d), J = df/dx is C x d. In eval
mode samples do not interact, so the gradient of sum_n <v, f(x_n)> with respect to the batch
gives every sample's vector-Jacobian product v^T J_n at once: C backward passes yield the full
batched Jacobian, and one backward pass yields the centroid mu = J^T 1 (v = 1) or the label row
J_y (v = e_y). There is no per-sample loop.

Where the Jacobian is taken (the input, or the embedding output for token models), the dtype
inputs get and the copies that keep a model from changing the data: :mod:`.inputs`. Which part
of the output is the logits: :mod:`.outputs`. Chunk sizes come from a memory budget
(:mod:`.memory`); the fast paths (:mod:`.linear_input`, the float32 spectrum) are checked
against the generic ones on the first chunk (:mod:`.verify`). Values that overflow float32 on
a finite model are measured again in float64.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

import alignctl.geometry.arguments as arguments
from alignctl.errors import InputError
from alignctl.geometry.chunk import measure_chunks, note
from alignctl.geometry.devices import (
    eval_mode,
    exact_float32,
    is_device_mismatch,
    outside_inference,
)
from alignctl.geometry.finite import blank_undefined
from alignctl.geometry.metrics import METRICS
from alignctl.geometry.metrics.sets import resolve_metrics
from alignctl.geometry.placement import copy_model, prepare
from alignctl.geometry.plan import Plan
from alignctl.geometry.underflow import splice
from alignctl.geometry.vjp import (
    full_jacobian,
)

log = logging.getLogger("alignctl")


def _select(metrics: Iterable[str] | None, has_labels: bool) -> list[str]:
    if metrics is None:
        return [m for m in METRICS.names() if not METRICS.get(m).opt_in
                and (has_labels or not METRICS.get(m).needs_labels)]  # fmt: skip
    names = resolve_metrics(metrics)  # a string was read letter by letter: 'unknown metric j'
    for name in names:
        if METRICS.get(name).needs_labels and not has_labels:
            raise InputError(f"metric {name} needs labels (y)")
    return names


def jacobian(model, x, *, batch_size=None, device="auto", dtype=None, output=None,
             max_memory=None) -> torch.Tensor:  # fmt: skip
    """Per-sample input-output Jacobians, (n, C, d), on the CPU.

    J[n, c] = d f_c(x_n) / d x_n with x_n flattened (for token models: the embedded
    sequence); computed with C batched vector-Jacobian products per chunk of samples, the
    model in eval mode. ``output``: which part of a tuple/dict output is the logits.
    """
    model, dtype = arguments.model(model), arguments.dtype(dtype)
    x = outside_inference(arguments.as_inputs(x))
    batch_size = arguments.count(batch_size, "batch size")
    model, dev, dt = prepare(model, device, dtype)
    parts = []
    with torch.inference_mode(False), torch.enable_grad(), exact_float32(), eval_mode(model):
        plan = Plan(model, x, dev, dt, output=output, batch_size=batch_size,
                     max_memory=max_memory, full=True)  # fmt: skip
        for _, _, f, inp in plan.chunks(x):
            parts.append(full_jacobian(f, inp).detach().cpu())  # (m, C, d)
    return torch.cat(parts)


def _finite_model(model, x) -> bool:
    ok = all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point())
    return ok and (not x.is_floating_point() or bool(torch.isfinite(x).all()))


def measure(model, x, y=None, *, metrics=None, batch_size=None, device="auto", dtype=None,
            output=None, max_memory=None, notes: list | None = None, sketch: int | None = None,
            seed: int = 0, errors: dict | None = None, outputs: list | None = None):  # fmt: skip
    """Per-sample Jacobian metrics: ``{name: tensor (n,)}`` on the CPU.

    Args:
        model: any differentiable ``nn.Module`` mapping (n, ...) to (n, C) or (n,), or to a
            tuple/dict/``ModelOutput`` holding such logits; token models are measured at
            their embedding (:mod:`alignctl.geometry.inputs`).
        x: inputs (n, ...); y: integer labels (n,), needed by the label-row metrics. Integer
            inputs that no ``nn.Embedding`` reads (e.g. ``uint8`` images) are cast to float.
        metrics: names from ``alignctl.metrics.METRICS`` (default: all that the inputs allow,
            except the opt-in ones such as ``local_complexity``), or one string: a name, a
            set (``fast``, ``standard``, ``full``) or a comma-separated list of both.
        batch_size: samples per chunk (default: sized to ``max_memory``, at most 1024).
        device: ``auto`` (CUDA, then MPS, else CPU), ``cpu``, ``cuda`` or ``mps``.
        dtype: e.g. ``torch.float64`` for reference-grade values (the model is copied).
        output: the logits' key or index in a tuple/dict output (default: ``logits``, else
            the first tensor).
        max_memory: working-memory budget of one chunk, bytes or ``"512MiB"`` (default 512 MiB;
            :mod:`alignctl.geometry.memory`).
        notes: a list that receives one line per fallback taken (a fast path that disagreed
            with the generic path, a float64 re-measurement, sketched estimates); the library
            never prints.
        sketch: the whole-Jacobian metrics from K random probes per sample instead of C
            products (:mod:`alignctl.geometry.sketch`): None (default) does so above
            ``MIN_CLASSES`` = 256 classes with K = 16, 0 never, K >= 1 when C > max(2K, 16).
            A note says when it was used; ``seed`` seeds the probes.
        errors: a dict that receives ``{metric: tensor (n,)}``, the per-sample standard error
            or error bound of every estimated (sketched) metric; exact metrics are absent.
        outputs: a list that receives the logits (n, C) or (n,) of the forward passes the
            metrics took, detached, when every chunk took one (the centroid and label-row
            metrics, the whole Jacobian; not the sketch); left empty otherwise. They are the
            model's own: a float64 re-measurement does not replace them. A caller that needs
            the predictions too (the monitor's probe accuracy, analyze's train accuracy)
            saves a forward pass.

    Only what the metrics need is computed: centroid metrics cost one backward pass per chunk,
    label-row metrics one more, the whole-Jacobian metrics C. Values are float64 tensors when
    the float32 ones overflowed on a finite model (a note says so).

    Raises:
        InputError: unknown metric, labels missing, out of range or not one per sample,
            outputs that are not (n, C) logits, inputs the output does not depend on
            differentiably, arguments of the wrong kind (complex, meta, sparse or nested
            inputs, a batch size that is not a positive integer, a dtype other than float32
            or float64: :mod:`alignctl.geometry.arguments`), a model that cannot be applied
            to x.
    """
    model, dtype = arguments.model(model), arguments.dtype(dtype)
    x = outside_inference(arguments.as_inputs(x))
    y = arguments.as_labels(y, x.shape[0])
    batch_size = arguments.count(batch_size, "batch size")
    arguments.seed(seed)
    arguments.boxes(notes, errors, outputs)
    names = _select(metrics, y is not None)
    given = model
    model, dev, dt = prepare(model, device, dtype)
    opts = {"sketch": sketch, "seed": seed, "errors": errors, "outputs": outputs, "tiny": []}
    try:
        values = measure_chunks(
            model, x, y, names, dev, dt, output, batch_size, max_memory, notes, opts
        )
    except RuntimeError as e:
        if dev.type == "cpu" or not is_device_mismatch(e):
            raise
        why = str(e).strip().splitlines()[0]
        if str(device or "auto").lower() != "auto":  # None is auto too
            raise InputError(f"the model does not run on {dev.type}: {why} (a tensor its forward "
                             "creates without device=, or a module held outside its "
                             "submodules?); measure it on the CPU") from None  # fmt: skip
        # auto means "the accelerator when it can": this model cannot, the CPU still can
        note(notes, f"the model does not run on {dev.type} ({why}): measured on the CPU")
        for box in (errors, outputs):
            if box is not None:
                box.clear()  # nothing of the failed attempt is kept
        model, dev, dt = prepare(given, "cpu", dtype)
        opts["tiny"] = []
        values = measure_chunks(model, x, y, names, dev, dt, output, batch_size, max_memory, notes,
                          opts)  # fmt: skip
    bad = [k for k, v in values.items() if not bool(torch.isfinite(v).all())]
    if bad and dt == torch.float32 and _finite_model(model, x):
        note(notes, f"{', '.join(bad)} overflowed float32 on a finite model: measured in float64")
        model64 = copy_model(model).to(dtype=torch.float64)
        opts["outputs"] = None  # the float32 logits stay: the model's, not its copy's
        values = measure_chunks(model64, x, y, names, dev, torch.float64, output, batch_size,
                          max_memory, notes, opts)  # fmt: skip
    elif dt == torch.float32 and opts["tiny"]:
        values = _underflowed(model, x, y, names, dev, output, batch_size, max_memory, notes,
                              values, torch.cat(opts["tiny"]))  # fmt: skip
    return blank_undefined(x, values, errors, lambda text: note(notes, text))


def _underflowed(model, x, y, names, dev, output, batch_size, max_memory, notes, values, tiny):
    """``values`` with the samples whose float32 Jacobian underflowed (:mod:`.underflow`)
    measured again in float64, on a finite model."""
    if not bool(tiny.any()) or not _finite_model(model, x):
        return values
    idx = tiny.nonzero().squeeze(1)
    model64 = copy_model(model).to(dtype=torch.float64)
    sub_y = None if y is None else torch.as_tensor(y)[idx]
    opts = {"sketch": 0, "seed": 0, "errors": None, "outputs": None, "tiny": None}
    again = measure_chunks(model64, x[idx], sub_y, names, dev, torch.float64, output, batch_size,
                     max_memory, notes, opts)  # fmt: skip
    changed = [
        k for k, v in again.items() if not torch.equal(v.to(values[k].dtype), values[k][idx])
    ]
    if not changed:  # J = 0 in float64 too (dead units): nothing underflowed
        return values
    note(notes, f"{len(idx)} sample(s) with a float32 Jacobian of 0 or below 2^-100 "
                 "(underflow): measured again in float64")  # fmt: skip
    return splice(values, idx, again)
