"""Centroid metrics (paper section 2, Theorem 2 and Definition 3; Figures 2, 4-6).

The centroid of the linear region containing x is mu_x = J^T 1, the sum of the Jacobian's
rows. Its alignment with x marks generalisation (section 3.1).
"""

import math

from alignctl.geometry.metrics import Quantities, register_metric


@register_metric("centroid_alignment", needs="centroid", bounds=(-1, 1))
def centroid_alignment(q: Quantities):
    """cos(x, mu) = <x, mu> / (|x| |mu|), 0 when a norm is 0 (Definition 3)."""
    return q.mu_cos


@register_metric("centroid_inner", needs="centroid")
def centroid_inner(q: Quantities):
    """<x, mu>, the centroid inner product (Figures 2, 6)."""
    return q.mu_inner


@register_metric("centroid_norm", needs="centroid", bounds=(0, math.inf))
def centroid_norm(q: Quantities):
    """|mu|_2, the centroid norm (Figures 2, 6)."""
    return q.mu_norm
