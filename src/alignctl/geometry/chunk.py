"""What one chunk's metrics are computed from: the centroid and label-row vector-Jacobian
products, or the whole Jacobian (through the linear-input shortcut when it is exact).
Used by :func:`alignctl.geometry.measure.measure`."""

from __future__ import annotations

import torch

import alignctl.geometry.verify as verify
from alignctl.geometry.linear_input import NOT_TAKEN, layer_jacobian
from alignctl.geometry.metrics import Quantities
from alignctl.geometry.vjp import (
    check_labels,
    full_jacobian,
    label_cotangent,
    vjp_rows,
)


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
