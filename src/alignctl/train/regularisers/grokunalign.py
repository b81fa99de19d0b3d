"""Grok(Un)Align (paper appendix B): GrokAlign with a negative lambda. It stops the centroid
norms from shrinking, no alignment appears, and the network collapses; a probe of what
alignment does. ``lambda`` is the magnitude; the penalty is negated."""

from alignctl.train.regularisers import register_regulariser
from alignctl.train.regularisers.grokalign import GrokAlign


@register_regulariser("grokunalign")
class GrokUnAlign(GrokAlign):
    name = "grokunalign"
    sign = -1.0
