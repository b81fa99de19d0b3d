"""Softmax-invariant Jacobian metrics: the geometry a classifier's predictions can see.

Softmax, and hence cross-entropy and the argmax, is unchanged when the same number is added to
every logit: the loss's gradient with respect to the logits, softmax(f) - e_y, sums to zero over
the classes. The logit sum 1^T f, whose input gradient is the centroid mu = J^T 1, is therefore
invisible to the loss and free to drift; so is everything the paper's centroid measures. What
the predictions depend on is the centred Jacobian

    J_c = (I - 11^T / C) J,   row k: J_c,k = J_k - mu / C   (each row minus the mean row),

whose label row is, up to the factor (C - 1) / C, the gradient of the mean margin
m(x) = f_y - mean_{k != y} f_k:  J_y - mean_{k != y} J_k = C / (C - 1) J_c,y. For a
bias-free ReLU network f = J x, so <x, J_c,y> is the centred logit of the label and
cos(x, J_c,y) its value relative to |x| |grad|: a first-order normalised margin.

Scalar-output models (C = 1) have no invisible direction: there J_c = J and the label row is
+-J (+1 for the positive label), as in ``jacobian_alignment``.
"""

from __future__ import annotations

import math

import torch

import alignctl.geometry.sketch as sketch
from alignctl.geometry.metrics import Quantities, ratio, register_metric


def _centred(q: Quantities) -> dict[str, torch.Tensor]:
    """In units of the per-sample power-of-two scales of J and x (exact; see
    :func:`alignctl.geometry.metrics.quantities.pow2_scale`), so that no product overflows or
    underflows: J_c x (n, C), |J_c|_F^2 (n,), the centred label row's inner product with x and
    its norm (n,), and the scale of J (n,). Formed from the centred rows (never as
    |J|^2 - |mu|^2 / C, which cancels catastrophically in float32 exactly when the logit sum
    dominates); cached on ``q``.

    For J = J_h W the centring acts on the output side, (I - 11^T/C) J_h W, and every quantity
    comes from the factor M = J_h R_w^T (W^T = Q_w R_w) that the spectrum metrics use too:
    |J_c|_F = |(I - 11^T/C) M|_F and |J_c,y| = |M_c,y| (Q_w has orthonormal columns), and
    <x, J_c,y> = <J_hc,y, W x>, so neither W W^T nor a d-dimensional row is ever formed."""
    cached = q.__dict__.get("_centred_cache")
    if cached is not None:
        return cached
    rows = torch.arange(q.x.shape[0], device=q.x.device)
    if q.sketch is not None:  # many classes: the centred label row is one exact VJP
        ones = torch.ones(q.x.shape[0], dtype=torch.float64, device=q.x.device)
        row = q.sketch.jcy
        return {"row_x": (q.xs * row).sum(-1), "row_norm": row.norm(dim=-1), "scale": ones}
    one = q.n_classes == 1
    if q.jac is not None:
        js = q.js
        jc = js if one else js - js.mean(dim=1, keepdim=True)  # (n, C, d)
        fro2 = jc.pow(2).sum(dim=(1, 2))
        jcx = torch.bmm(jc, q.xs.unsqueeze(-1)).squeeze(-1)
        row_norm = lambda y: jc[rows, y].norm(dim=-1)  # noqa: E731
    else:
        jhs, m = q.jhs, q.jh_factor  # (n, C, k), (n, C, min(k, d))
        jh = jhs if one else jhs - jhs.mean(dim=1, keepdim=True)
        mc = m if one else m - m.mean(dim=1, keepdim=True)
        fro2 = mc.pow(2).sum(dim=(1, 2))
        jcx = torch.bmm(jh, q.wxs.unsqueeze(-1)).squeeze(-1)
        row_norm = lambda y: mc[rows, y].norm(dim=-1)  # noqa: E731
    out = {"jcx": jcx, "fro2": fro2.clamp_min(0), "scale": q.j_scale}
    rows_x = jcx  # <x, J_c,k> for every class k
    if q.y is not None:
        if one:  # the label row of a scalar output is +-J
            sign = q._label_sign()
            out["row_x"], out["row_norm"] = sign * rows_x[:, 0], row_norm(torch.zeros_like(q.y))
        else:
            out["row_x"] = rows_x.gather(1, q.y.unsqueeze(1)).squeeze(1)
            out["row_norm"] = row_norm(q.y)
    q.__dict__["_centred_cache"] = out
    return out


@register_metric("centred_label_alignment", needs="jacobian", labels=True, bounds=(-1, 1))
def centred_label_alignment(q: Quantities):
    """cos(x, J_c,y) with J_c,y = J_y - mu / C, the label row of the centred Jacobian
    (= cos(x, J_y - mean_{k != y} J_k), the mean-margin gradient); 0 when a norm is 0.
    Invariant to adding any g(x) to every logit. Scalar outputs: cos(x, +-J)."""
    c = _centred(q)  # a cosine: the scales cancel
    return ratio(c["row_x"], q._xs_norm * c["row_norm"])


@register_metric("centred_label_norm", needs="jacobian", labels=True, bounds=(0, math.inf))
def centred_label_norm(q: Quantities):
    """|J_c,y|_2 = |J_y - mu / C|, (C - 1) / C times the mean-margin gradient's norm."""
    c = _centred(q)
    return q._real(c["row_norm"], c["scale"])


@register_metric("centred_alignment_full", needs="jacobian", bounds=(0, 1))
def centred_alignment_full(q: Quantities):
    """|J_c x_hat|^2 / |J_c|_F^2 in [0, 1], x_hat = x / |x|: ``jacobian_alignment_full`` of the
    centred Jacobian (every centred row parallel to x gives 1). 0 when x = 0 or J_c = 0.
    Sketched: |J_c x_hat|^2 exact over the Hutch++ estimate of |J_c|_F^2 (with its error)."""
    if q.sketch is not None:
        value = sketch.ratio_error(q.sketch.jcx2, q.sketch, centred=True)
        return q.estimate("centred_alignment_full", value)
    c = _centred(q)  # a ratio: the scales cancel
    return ratio(c["jcx"].pow(2).sum(-1), q._xs_norm.pow(2) * c["fro2"]).clamp(0, 1)


@register_metric("centred_norm", needs="jacobian", bounds=(0, math.inf))
def centred_norm(q: Quantities):
    """|J_c|_F, the part of the Jacobian's norm that the softmax sees.
    Sketched: the square root of the Hutch++ estimate of |J_c|_F^2 (with its error)."""
    if q.sketch is not None:
        return q.estimate("centred_norm", sketch.norm(q.sketch, centred=True))
    c = _centred(q)
    return q._real(c["fro2"].sqrt(), c["scale"])
