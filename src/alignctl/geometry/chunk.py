"""The chunk loop of :func:`alignctl.geometry.measure.measure` (:func:`measure_chunks`) and what
one chunk's metrics are computed from: the centroid and label-row vector-Jacobian products,
the whole Jacobian (through the linear-input shortcut when it is exact) or its sketch."""

from __future__ import annotations

import logging

import torch

import alignctl.geometry.verify as verify
from alignctl.errors import InputError
from alignctl.geometry.devices import eval_mode, exact_float32, twice_differentiable
from alignctl.geometry.linear_input import NOT_TAKEN, layer_jacobian
from alignctl.geometry.metrics import METRICS, Quantities
from alignctl.geometry.plan import Plan
from alignctl.geometry.sketched import CENTRED_SKETCHED, sketch_quantities
from alignctl.geometry.underflow import tiny_samples
from alignctl.geometry.vjp import (
    check_labels,
    full_jacobian,
    label_cotangent,
    vjp_rows,
)

log = logging.getLogger("alignctl")


def note(notes: list | None, text: str) -> None:
    """Log ``text`` (debug) and add it to ``notes`` once."""
    log.debug(text)
    if notes is not None and text not in notes:
        notes.append(text)


def jacobian_parts(plan, xb, f, inp, first, note, outputs) -> dict:
    """The Jacobian of a chunk: J_h and W through the shortcut (checked against the generic
    path on the first chunk), else J itself; ``outputs`` receives the chunk's logits,
    ``note(text)`` the reason a shortcut was not taken."""
    if plan.layer is not None:
        got = layer_jacobian(f, plan.layer, inp, vjp_rows, outputs)
        reason = None
        if got is None:
            reason = NOT_TAKEN
        elif first:
            k = min(verify.N_CHECK, inp.shape[0])
            generic = full_jacobian(plan.fn(xb[:k]), inp[:k])
            reason = verify.check_shortcut(generic, got[0][:k], plan.layer.weight.detach())
        if reason is None:
            w = plan.layer.weight.detach()
            return {"jh": got[0], "w": w, "wx": got[1], "rw": plan.weight_factor()}
        note(reason)
        plan.layer = None
    outputs.clear()  # the shortcut's forward pass, if it took one, is not this chunk's
    return {"jac": full_jacobian(f, inp, outputs)}  # (m, C, d)


def vjp_quantities(f, inp, flat, y, start, needs) -> Quantities:
    """Centroid (v = 1) and label-row (v = e_y) vector-Jacobian products of a chunk."""
    m = inp.shape[0]
    inp = inp.detach().requires_grad_(True)
    out = f(inp)
    cots, keys = [], []
    if "centroid" in needs:
        cots.append(torch.ones_like(out))
        keys.append("mu")
    if "label" in needs:
        yb = check_labels(torch.as_tensor(y)[start : start + m], m, out.shape[1])
        cots.append(label_cotangent(yb.to(out.device), out.shape[1], out))
        keys.append("jy")
    rows = dict(zip(keys, vjp_rows(out, inp, cots), strict=True))
    return Quantities(flat, f=f, inp=inp.detach(), **rows), out.detach()


def measure_chunks(model, x, y, names, dev, dt, output, batch_size, max_memory, notes, opts):
    """{metric: (n,) values} of ``model`` on x, chunk by chunk in one dtype ``dt`` on ``dev``
    (the plan: :class:`~alignctl.geometry.plan.Plan`); ``opts`` holds ``sketch``, ``seed`` and the
    caller's boxes ``errors``, ``outputs`` (the logits, when every chunk took a plain forward
    pass) and ``tiny`` (each chunk's underflow flags, :mod:`.underflow`), any of them None."""
    needs = {METRICS.get(m).needs for m in names}
    full = "jacobian" in needs
    centred = bool(CENTRED_SKETCHED & set(names))  # the sketch's probes stop on |J_c|_F^2 too
    results: dict[str, list[torch.Tensor]] = {m: [] for m in names}
    errs: dict[str, list[torch.Tensor]] = {}
    logits: list[torch.Tensor | None] = []
    with torch.inference_mode(False), torch.enable_grad(), exact_float32(), eval_mode(model):
        plan = Plan(model, x, dev, dt, output=output, batch_size=batch_size,
                     max_memory=max_memory, full=full, sketch=opts["sketch"])  # fmt: skip
        gen = torch.Generator(dev).manual_seed(int(opts["seed"])) if plan.k else None
        first, exact_spectrum = True, False
        for start, xb, f, inp in plan.chunks(x):
            m = inp.shape[0]
            flat = inp.reshape(m, -1)  # (m, d)
            out = None
            if plan.k:
                yb = None
                if y is not None:
                    yb = check_labels(torch.as_tensor(y)[start : start + m], m, plan.n_classes)
                    yb = yb.to(flat.device)
                with twice_differentiable():  # its JVPs differentiate a backward pass
                    q = sketch_quantities(plan, f, inp, yb, plan.k, gen, first,
                                          lambda text: note(notes, text), centred)  # fmt: skip
            elif full:
                seen: list[torch.Tensor] = []
                parts = jacobian_parts(plan, xb, f, inp, first, lambda t: note(notes, t), seen)
                out = seen[0] if seen else None
                yb = None
                if y is not None:
                    n_classes = next(iter(parts.values())).shape[1]
                    yb = check_labels(torch.as_tensor(y)[start : start + m], m, n_classes)
                    yb = yb.to(flat.device)
                if first:
                    sub = {
                        k: v if k in ("w", "rw") else v[: verify.N_CHECK] for k, v in parts.items()
                    }
                    reason = verify.check_spectrum(Quantities(flat[: verify.N_CHECK], **sub))
                    if reason:
                        note(notes, reason)
                        exact_spectrum = True
                q = Quantities(flat, y=yb, exact_spectrum=exact_spectrum, f=f, inp=inp,
                               module=plan.front.model, **parts)  # fmt: skip
            elif needs <= {"model"}:  # no derivative needed
                q = Quantities(flat, f=f, inp=inp, module=plan.front.model)
            else:
                q, out = vjp_quantities(f, inp, flat, y, start, needs)
                q.module = plan.front.model
            if first:  # a branch or batch statistics at the chunk's size only
                plan.check_chunk(xb, out)
            logits.append(out)  # None: this chunk's path took no plain forward pass
            if opts["tiny"] is not None:
                opts["tiny"].append(tiny_samples(q))
            for name in names:
                results[name].append(metric(name, q).detach().cpu())
            for name, err in q.errors.items():
                errs.setdefault(name, []).append(err.detach().cpu())
            first = False
    for text in (plan.front.output_note, plan.note):
        if text:
            note(notes, text)
    if opts["outputs"] is not None:
        opts["outputs"].clear()
        if logits and all(o is not None for o in logits):
            opts["outputs"].append(torch.cat(logits).cpu())
    if opts["errors"] is not None:
        opts["errors"].clear()
        opts["errors"].update({k: torch.cat(v) for k, v in errs.items()})
    if errs:
        note(notes, f"{', '.join(errs)}: estimated from K={plan.k} random probes per sample "
                     f"({plan.n_classes} classes; randomized SVD and Hutch++, "
                     "alignctl.geometry.sketch), not exact: errors in metrics_error; "
                     "sketch=0 (--sketch 0) for exact values")  # fmt: skip
    return {name: torch.cat(vals) for name, vals in results.items()}


def metric(name: str, q: Quantities) -> torch.Tensor:
    """One metric of a chunk; under a sketch, a metric that needs J itself is an InputError."""
    try:
        return METRICS.get(name).fn(q)
    except AttributeError:
        if q.sketch is None:
            raise
        raise InputError(
            f"metric {name} needs the whole Jacobian and has no sketched "
            "estimate; measure it with sketch=0 (--sketch 0)"
        ) from None
