"""Every rank of a distributed ``train`` builds its trainer before rank 0 writes anything.

Each rank reads the data, builds the model and the regularisers itself (a user factory may
fail on one rank only: a file it reads, its memory, the ``RANK`` it sees). Rank 0 asks for
that through :meth:`alignctl.report.distributed.Group.map` after building its own trainer and
before it takes the lock, creates the run folder or restores a checkpoint, so that an error
on any rank is what it is for one process: one line from rank 0, exit 2 on every rank,
nothing written. The trainers wait here for :func:`alignctl.train.ddp.fit_distributed`.
"""

from __future__ import annotations

_READY: dict = {}  # (run folder, this rank) -> the DDPTrainer built for it


def start_ranks(group, trainer) -> None:
    """Rank 0 (``trainer``: its own, built, nothing written yet): every other rank builds its
    trainer for the same run; the lowest failing rank's error is raised here."""
    from alignctl.train.ddp import Share

    share = Share(trainer.dir, trainer.cfg, str(trainer.device), 0, 0)
    group.map(_build, [share] * group.size, mine=lambda: None)


def _build(share) -> None:
    import torch.distributed as dist

    from alignctl.train.ddp import DDPTrainer

    rank = dist.get_rank()
    _READY.clear()  # one run at a time
    _READY[(str(share.run_dir), rank)] = DDPTrainer(
        share.run_dir, share.cfg, share.device, rank=rank, size=dist.get_world_size()
    )


def ready(share, rank: int):
    """The trainer :func:`start_ranks` built on this rank for ``share``'s run, else None."""
    return _READY.pop((str(share.run_dir), rank), None)
