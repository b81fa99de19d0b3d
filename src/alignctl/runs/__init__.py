"""What is read and written: run directories, configs, checkpoints, models and data.

Owns ``alignctl.yaml`` (:mod:`.config`), run discovery (:mod:`.run`), checkpoint discovery and
format readers (:mod:`.checkpoints`), user factories (:mod:`.factories`), atomic files
(:mod:`.atomic`), and the task and model registries (:mod:`.tasks`, :mod:`.models`).

May import: ``alignctl.errors``, ``alignctl.registry``, ``alignctl.geometry``. Never train,
report, integrations or cli.
"""
