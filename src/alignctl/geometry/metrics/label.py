"""Label-row Jacobian metrics (paper section 3.2, Figure 5).

J_y is the Jacobian row of the sample's label; for a scalar-output model it is the only row,
times +1 for the positive label and -1 for the other. Its alignment with x marks robustness.
"""

from alignctl.geometry.metrics import Quantities, register_metric


@register_metric("jacobian_alignment", needs="label", bounds=(-1, 1))
def jacobian_alignment(q: Quantities):
    """cos(x, J_y) = <x, J_y> / (|x| |J_y|), 0 when a norm is 0 (Figure 5)."""
    return q.label_cos


@register_metric("jacobian_inner", needs="label")
def jacobian_inner(q: Quantities):
    """<x, J_y>."""
    return q.label_inner
