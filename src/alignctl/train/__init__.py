"""Training: the loop and its state, regularisers (GrokAlign and peers), presets, races.

Owns the Trainer (:mod:`.trainer`: the loop; :mod:`.step`: one optimisation step;
:mod:`.schedule`: when to evaluate and save; :mod:`.rundir`: the run directory and resume
state; :mod:`.divergence`: NaN/inf detection; :mod:`.resume`: where a resumed run continues;
:mod:`.lock`: one writer per run folder; :mod:`.jsonio`: strict JSON), config resolution
(:mod:`.build`), the regulariser registry (:mod:`.regularisers`),
the presets (:mod:`.presets`) and ``race`` (:mod:`.race`).

May import: ``alignctl.errors``, ``alignctl.registry``, ``alignctl.geometry``,
``alignctl.runs``, ``alignctl.evaluation``. Never report, integrations or cli.
"""
