"""Whole-Jacobian metrics: alignment of every row (Definition 5), norm and spectrum
(Appendix A.2, Figure 3). They need the full Jacobian J (n, C, d), or, with many classes,
its sketch (:mod:`alignctl.geometry.sketch`): then each is an estimate with an error."""

import math

import torch

import alignctl.geometry.sketch as sketch
import alignctl.geometry.sketch_erank as sketch_erank
from alignctl.geometry.metrics import Quantities, ratio, register_metric


@register_metric("jacobian_alignment_full", needs="jacobian", bounds=(0, 1))
def jacobian_alignment_full(q: Quantities):
    """|J x_hat|^2 / |J|_F^2 with x_hat = x / |x|, in [0, 1]; 1 exactly when J = c x^T
    (Definition 5: every row parallel to x). 0 when x = 0 or J = 0.
    Sketched: |J x_hat|^2 exact (one JVP) over the Hutch++ estimate of |J|_F^2; error: its
    standard error (:func:`alignctl.geometry.sketch.ratio_error`)."""
    if q.sketch is not None:
        return q.estimate("jacobian_alignment_full", sketch.ratio_error(q.sketch.jx2, q.sketch))
    return q.alignment_full


@register_metric("jacobian_norm", needs="jacobian", bounds=(0, math.inf))
def jacobian_norm(q: Quantities):
    """|J|_F, the quantity GrokAlign penalises (section 4.1).
    Sketched: the square root of the Hutch++ (Hutchinson, Rademacher) estimate of |J|_F^2;
    error: its standard error (:func:`alignctl.geometry.sketch.norm`)."""
    if q.sketch is not None:
        return q.estimate("jacobian_norm", sketch.norm(q.sketch))
    return q.fro


@register_metric("jacobian_pc1", needs="jacobian", bounds=(0, 1))
def jacobian_pc1(q: Quantities):
    """sigma_1^2 / sum_i sigma_i^2, the explained variance of the first principal
    component (Appendix A.2; 1 means rank one). 0 for an all-zero Jacobian.
    Sketched: the top Ritz value of the randomized range finder (Halko et al. 2011) over
    Hutch++; error: standard error plus residual bound (:func:`alignctl.geometry.sketch.pc1`)."""
    if q.sketch is not None:
        return q.estimate("jacobian_pc1", sketch.pc1(q.sketch))
    s2 = q.singular_values.pow(2)
    return ratio(s2[:, 0], s2.sum(-1)).to(q.x.dtype)


@register_metric("jacobian_erank", needs="jacobian", bounds=(0, math.inf))
def jacobian_erank(q: Quantities):
    """exp(-sum_i p_i log p_i) with p_i = sigma_i / sum_j sigma_j (Roy & Vetterli's
    effective rank), in [1, min(C, d)]. 0 for an all-zero Jacobian.
    Sketched: from the top K Ritz values and the Hutch++ tail energy, the midpoint of the two
    extreme completions of the tail; error: half their spread
    (:func:`alignctl.geometry.sketch_erank.erank`)."""
    if q.sketch is not None:
        return q.estimate("jacobian_erank", sketch_erank.erank(q.sketch))
    s = q.singular_values
    total = s.sum(-1, keepdim=True)
    p = s / torch.where(total > 0, total, torch.ones_like(total))
    entropy = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)
    erank = torch.where(total.squeeze(-1) > 0, entropy.exp(), torch.zeros_like(entropy))
    return erank.to(q.x.dtype)
