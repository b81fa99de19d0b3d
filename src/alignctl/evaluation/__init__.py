"""What a network's outputs are worth: losses, accuracies, the grokked criterion, attacks.

Owns the loss registry (:mod:`.losses`), prediction, accuracies and the paper's grokked
criteria (:mod:`.accuracy`) and l_inf PGD (:mod:`.attacks`). Both training and reporting
need these, so they live below both.

May import: ``alignctl.errors``, ``alignctl.registry``, ``alignctl.geometry``, ``alignctl.runs``.
Never train, report, integrations or cli.
"""


def __getattr__(name: str):
    # ``alignctl.evaluation`` was one module before 0.2 (now :mod:`.accuracy`).
    from alignctl._compat import forward

    return forward(__name__, "alignctl.evaluation", "alignctl.evaluation.accuracy", name)
