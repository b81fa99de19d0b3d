"""From checkpoints to conclusions: analysis, verdicts, the recommendation, gates, rendering.

Owns ``analyze`` (:mod:`.analysis`: run -> per-checkpoint metrics and accuracies), verdicts and
the recommendation (:mod:`.verdict`), CI gates (:mod:`.gates`) and the renderers
(:mod:`.render`: table, Markdown, CSV, plot). Pure library: it never prints.

May import: ``alignctl.errors``, ``alignctl.registry``, ``alignctl.geometry``,
``alignctl.runs``, ``alignctl.evaluation``, ``alignctl.train``. Never integrations or cli.
"""


def __getattr__(name: str):
    # ``alignctl.report`` was the renderers' module before 0.2 (now :mod:`.render`).
    from alignctl._compat import forward

    return forward(__name__, "alignctl.report", "alignctl.report.render", name)
