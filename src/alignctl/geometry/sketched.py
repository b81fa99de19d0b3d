"""One chunk measured through a sketch (many classes): the exact one-product quantities and the
randomized spectrum of :mod:`alignctl.geometry.sketch`, as a :class:`Quantities` bundle.

Exact at any C, from one product each: mu = J^T 1, J_y, the centred label row J^T (e_y - 1/C)
(VJPs, so that no row is formed as a difference of two large ones) and J x (one JVP). With the
linear-input shortcut the products stop at h = W x + b (A = J_h R_w^T for the spectrum, rows
times W for mu and the label rows); on the first chunk a random cotangent's VJP through the
whole model is compared with the shortcut's (for a Gaussian v, v^T (J - J_h W) = 0 only if
J = J_h W, with probability one), and the generic path is taken if they differ.
"""

from __future__ import annotations

import torch

import alignctl.geometry.verify as verify
from alignctl.geometry.linear_input import NOT_TAKEN, layer_forward
from alignctl.geometry.metrics import Quantities
from alignctl.geometry.products import Operator
from alignctl.geometry.sketch import Sketch
from alignctl.geometry.vjp import label_cotangent

# the metrics that read the sketch's |J_c|_F^2 (sketch.norm / ratio_error with centred=True)
CENTRED_SKETCHED = frozenset({"centred_norm", "centred_alignment_full"})


def _shortcut(plan, f, inp, first, generator):
    """(Operator at h, W, W x) or a one-line reason why the generic path is taken."""
    got = layer_forward(f, plan.layer, inp)
    if got is None:
        return NOT_TAKEN
    out, h, wx = got
    w = plan.layer.weight.detach()
    op = Operator(out, h, plan.weight_factor(), batched=plan.batched)
    if first:
        k = min(verify.N_CHECK, inp.shape[0])
        leaf = inp[:k].detach().requires_grad_(True)
        ref_out = f(leaf)
        v = torch.randn(ref_out.shape, generator=generator, device=out.device).to(out.dtype)
        (ref,) = torch.autograd.grad(ref_out, leaf, v)
        pad = torch.zeros(out.shape[0] - k, out.shape[1], dtype=v.dtype, device=v.device)
        fast = op.vjp_leaf(torch.cat([v, pad]))[:k]
        reason = verify.check_shortcut(ref.reshape(k, 1, -1), fast.unsqueeze(1), w)
        if reason:
            return reason
    return op, w, wx


def sketch_quantities(plan, f, inp, y, k: int, generator, first: bool, note,
                      centred: bool = True) -> Quantities:  # fmt: skip
    """The :class:`Quantities` of a chunk ``inp`` (labels ``y`` or None) measured with K
    random probes; ``note(text)`` records a fallback; ``centred``: a centred whole-Jacobian
    metric is requested (the probes also stop on |J_c|_F^2's half-width)."""
    m = inp.shape[0]
    flat = inp.reshape(m, -1)
    got = None
    if plan.layer is not None:
        got = _shortcut(plan, f, inp, first, generator)
        if isinstance(got, str):
            note(got)
            plan.layer, got = None, None
    if got is None:
        leaf = inp.detach().requires_grad_(True)
        op, w, tangent = Operator(f(leaf), leaf, batched=plan.batched), None, leaf.detach()
    else:
        op, w, tangent = got
    out = op.out
    n_classes = out.shape[1]

    # u^T J in input space, (m, d), for the centroid (u = 1), label (e_y) and centred label
    # (e_y - 1/C) cotangents: one batched call (Operator.vjp)
    cots = [torch.ones_like(out)]
    if y is not None:
        e = label_cotangent(y.to(out.device), n_classes, out)
        cots += [e] if n_classes == 1 else [e, e - 1.0 / n_classes]
    got_rows = op.vjp_rows(torch.stack(cots, 2))  # (m, len(cots), k)
    ones_row = got_rows[:, 0] if op.right is None else got_rows[:, 0] @ op.right  # A^T 1
    if w is not None:
        got_rows = got_rows @ w
    rows = {"mu": got_rows[:, 0]}
    jcy = None
    if y is not None:
        rows["jy"] = got_rows[:, 1]
        jcy = got_rows[:, -1]
    jx = op.jvp_leaf(tangent).double()  # J x, (m, C): exact
    x2 = flat.double().pow(2).sum(1)
    x2 = torch.where(x2 > 0, x2, torch.inf)  # x = 0: |J x_hat| taken as 0
    sk = Sketch(op, n_classes, k, generator, ones_row, centred)
    sk.jx2 = jx.pow(2).sum(1) / x2
    jcx = jx if n_classes == 1 else jx - jx.mean(1, keepdim=True)
    sk.jcx2 = jcx.pow(2).sum(1) / x2
    sk.jcy = jcy
    return Quantities(flat.detach(), y=y, sketch=sk, f=f, inp=inp, module=plan.front.model,
                      **rows)  # fmt: skip
