"""More than one process: ``torchrun --nproc-per-node N -m alignctl ...`` (torch.distributed).

Leader and workers. Rank 0 runs the command as a single process would: it validates the
options, opens the run, reads the cache, writes every output and prints every line. Ranks
1..N-1 never run the command: :meth:`Group.serve` waits for work from rank 0. When rank 0 has
work to spread (the checkpoints an analysis must measure, the pairs of a race) it calls
:meth:`Group.map`: one broadcast from rank 0 carries a picklable function and one share per
rank; every rank (rank 0 too) applies the function to its share; one ``gather_object`` brings
the results, or each rank's exception, back to rank 0, which raises the failure of the
earliest work item (``exception.at``, else the lowest rank): the same one-line error a single
process gives, exit 2. At the end rank 0 broadcasts its exit code (:meth:`Group.finish`) and
every rank exits with it (:func:`leave`), deaf to SIGTERM from then on: torchrun sends it
to the other ranks as soon as one has exited with a code other than 0 (and itself exits 1,
with its own ``ChildFailedError`` summary, whatever the ranks' codes). A failing share is
data, not a different path through the code, so the ranks always meet in the same
collectives: no error makes them hang.

The environment is torchrun's (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``); without it, or with
``WORLD_SIZE=1`` or ``ALIGNCTL_DISTRIBUTED=off``, alignctl is one process exactly as before.
The default group is NCCL when every rank on the machine has a GPU of its own (each rank on
the GPU ``LOCAL_RANK``), else gloo (ranks that share a GPU, or none, compute where ``--device``
says); the objects go through a gloo group (CPU memory, no device copies).
``ALIGNCTL_DIST_TIMEOUT`` (seconds, default 600) bounds the start (every rank must join);
the work itself may take hours, so the object group waits up to ``ALIGNCTL_DIST_WORK_TIMEOUT``
(default 7 days) for a share: a rank that dies makes torchrun stop the others.

This module imports torch only when a group is started (``alignctl --help`` stays fast).
"""

from __future__ import annotations

import functools
import os
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from alignctl.errors import InputError

ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_ACTIVE: list[Group] = []


class StartFailed(InputError):
    """The process group did not start on this rank; its cause may be this rank's alone, so
    every rank says so (an error in the settings, the same on every rank, rank 0 alone)."""


def requested(environ=None) -> bool:
    """Whether torchrun started this process as one of several (and it is not turned off)."""
    env = os.environ if environ is None else environ
    if env.get("ALIGNCTL_DISTRIBUTED", "").strip().lower() in ("off", "0", "no", "false"):
        return False
    if not all(env.get(k) for k in ENV):
        return False
    try:
        return int(env["WORLD_SIZE"]) > 1
    except ValueError:
        raise InputError(f"WORLD_SIZE={env['WORLD_SIZE']!r} is not a whole number") from None


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        raise InputError(f"{name}={text!r} is not a number of seconds") from None
    if not value > 0:
        raise InputError(f"{name} must be positive, not {text}")
    return value


def join() -> Group | None:
    """Start (once) the process group torchrun's environment describes; None when alignctl
    runs as a single process. InputError when torch.distributed cannot start."""
    if _ACTIVE:
        return _ACTIVE[0]
    if not requested():
        return None
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    start = timedelta(seconds=_seconds("ALIGNCTL_DIST_TIMEOUT", 600))
    work = timedelta(seconds=_seconds("ALIGNCTL_DIST_WORK_TIMEOUT", 7 * 24 * 3600))
    if not dist.is_available():
        raise InputError("torchrun: this torch has no torch.distributed")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    backend = choose_backend(gpus, local, dist.is_nccl_available())
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group(backend, init_method="env://", timeout=start)
        objects = dist.new_group(backend="gloo", timeout=work)
    except Exception as e:  # noqa: BLE001 (rendezvous, ports, timeouts: one line)
        raise StartFailed(f"torch.distributed could not start ({backend}): {e}") from None
    group = Group(dist.get_rank(), dist.get_world_size(), backend, objects, local)
    _ACTIVE.append(group)
    return group


def choose_backend(gpus: int, local_ranks: int, nccl: bool) -> str:
    """``nccl`` when every rank on this machine has a GPU of its own (NCCL refuses two ranks
    on one device: the second rank fails and the first waits out the rendezvous timeout),
    else ``gloo`` (CPU collectives; ranks that share a GPU still compute on it)."""
    return "nccl" if nccl and gpus >= max(local_ranks, 1) else "gloo"


def active() -> Group | None:
    """The group :func:`join` started, if any."""
    return _ACTIVE[0] if _ACTIVE else None


@dataclass
class Group:
    rank: int
    size: int
    backend: str
    objects: Any  # the gloo process group the objects travel through
    local_size: int = 1  # ranks on this machine (threads per rank = cores / local_size)
    busy: bool = False  # rank 0 inside map: the others are working, not waiting in serve

    def _broadcast(self, message=None):
        import torch.distributed as dist

        box = [message]
        dist.broadcast_object_list(box, src=0, group=self.objects)
        return box[0]

    def _gather(self, result) -> list | None:
        import torch.distributed as dist

        out = [None] * self.size if self.rank == 0 else None
        dist.gather_object(result, out, dst=0, group=self.objects)
        return out

    def map(self, fn: Callable, shares: list, mine: Callable | None = None) -> list:
        """Rank 0: ``fn(shares[r])`` on every rank r (``fn`` a module-level function, the
        shares picklable and small: every rank receives them all); the results in rank
        order. ``mine()`` (if given) is rank 0's own part instead of ``fn(shares[0])``.
        Raises the exception of the earliest failed item (see the module)."""
        if len(shares) != self.size:
            raise ValueError(f"{len(shares)} shares for {self.size} ranks")
        self._broadcast(("call", fn, shares))
        self.busy = True  # until the gather: the other ranks are inside fn
        outcomes = self._gather(_call(mine or (lambda: fn(shares[0])), local=True))
        self.busy = False
        failed = [(o[1], r, o[2]) for r, o in enumerate(outcomes) if o[0] == "error"]
        if failed:
            raise min(failed, key=lambda f: (f[0], f[1]))[2]
        return [o[1] for o in outcomes]

    def serve(self) -> int:
        """Ranks 1..N-1: apply what rank 0 sends until it sends its exit code; return it
        (130, silently, on Ctrl-C: torchrun's whole process group receives it)."""
        try:
            while True:
                message = self._broadcast()
                if message[0] == "exit":
                    _settled()
                    self._close()
                    return message[1]
                _, fn, shares = message
                self._gather(_call(functools.partial(fn, shares[self.rank])))
        except KeyboardInterrupt:
            return 130

    def finish(self, code: int) -> None:
        """Rank 0: tell the others the exit code and leave the group. Not after Ctrl-C or
        SIGTERM (130, 143) inside :meth:`map`: the other ranks received the signal too, or
        torchrun stops them, and they may be inside another collective. After one that ended
        cleanly (a distributed ``train`` saved and stopped), every rank waits in
        :meth:`serve`, so they hear the code, if they are still there."""
        if code in (130, 143) and self.busy:
            _ACTIVE.clear()
            return
        try:
            self._broadcast(("exit", code))
            _settled()
        except Exception:  # noqa: BLE001 (after a signal the others may have gone already)
            if code not in (130, 143):
                raise
        finally:
            self._close()

    def _close(self) -> None:
        import torch.distributed as dist

        _ACTIVE.clear()
        if dist.is_initialized():
            dist.destroy_process_group()
        self.objects = None  # the group's last reference: its backend goes now, not at exit


def leave(code: int) -> NoReturn:
    """End this rank's process with ``code`` once every rank knows it: the standard streams
    flushed, then ``os._exit``, skipping the interpreter's finalisation. That finalisation
    is where a rank could still die with SIGABRT ("terminate called without an active
    exception", seen once in CI on rank 0 after the group was closed): C++ threads of the
    backend meeting a half torn-down interpreter. Nothing is left to do by then: every
    output was written and closed by the command itself."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)


def _settled() -> None:
    """Every rank knows the exit code: from here SIGTERM is ignored. torchrun sends it to the
    ranks still leaving (closing the group, Python's shutdown) as soon as one rank has exited
    with a code other than 0; it would turn the agreed code (an input error's 2 on every rank)
    into -15, or into a traceback where a handler raises. What is left is short."""
    import signal

    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except ValueError:  # not the main thread (a library caller's): nothing to protect
        pass


def _call(thunk: Callable, local: bool = False) -> tuple:
    """("ok", result) or ("error", item, exception): a failure travels to rank 0 as data.
    An exception that cannot be pickled travels as a RuntimeError naming it (``local``: rank
    0's own, which does not travel, stays as raised)."""
    try:
        return ("ok", thunk())
    except Exception as e:  # noqa: BLE001 (rank 0 decides; KeyboardInterrupt still stops)
        at = getattr(e, "at", None)
        try:
            if not local:
                pickle.dumps(e)
        except Exception:  # noqa: BLE001
            e = RuntimeError(f"{type(e).__name__}: {e}")
        return ("error", at if isinstance(at, int) else float("inf"), e)


def round_robin(n: int, size: int) -> list[list[int]]:
    """Items 0..n-1 over ``size`` ranks: rank r gets r, r+size, ... Round robin rather than
    blocks: the cost of a checkpoint grows along a run (an aligned network takes the float64
    spectrum path) and a cache's misses are the newest checkpoints, so blocks would give one
    rank the expensive end; interleaving spreads both evenly."""
    return [list(range(r, n, size)) for r in range(size)]
