"""Which checkpoints of a run folder are completely written, and whether the run is over: the
watching half of ``alignctl analyze --follow`` (:mod:`alignctl.report.follow`).

A checkpoint is complete once alignctl's own file is visible (written to a hidden temporary
name and renamed into place, :mod:`alignctl.runs.atomic`; its safetensors header names
``alignctl_version``), or, for any other file, once its size and modification time have not
changed for ``settle`` seconds and it opens as a checkpoint; a checkpoint rewritten in place
(Lightning's ``last.ckpt``) is new again. The run is over as :meth:`RunWatcher.finished` says
(the rules are in :mod:`alignctl.report.follow`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from alignctl.errors import InputError
from alignctl.runs.limits import loads_json


def _is_own_file(path: Path) -> bool:
    """A safetensors file that alignctl wrote (atomically: complete once visible)."""
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or n > 100_000_000:
                return False
            header = loads_json(fh.read(n))
        return "alignctl_version" in (header.get("__metadata__") or {})
    except (OSError, ValueError):
        return False


def _opens(path: Path) -> bool:
    """The file (or Hugging Face folder) reads as a checkpoint."""
    from alignctl.runs.checkpoints import CheckpointRef, read_checkpoint

    try:
        read_checkpoint(CheckpointRef(path, path.name, None))
        return True
    except InputError:
        return False


def _parses(text: str) -> bool:
    try:
        loads_json(text)
        return True
    except ValueError:
        return False


def _interrupted(text: str) -> bool:
    """run.json (which parses) says the run stopped part way."""
    try:  # a run.json that does not parse (garbage, nested too deep) says nothing
        summary = loads_json(text)
    except ValueError:
        return False
    return isinstance(summary, dict) and bool(summary.get("interrupted", False))


def _signature(path: Path) -> tuple:
    files = [path] if path.is_file() else sorted(q for q in path.rglob("*") if q.is_file())
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


GONE_AFTER = 5.0  # seconds nothing may write a run before it is taken as over


class RunWatcher:
    """Which checkpoints of ``root`` are completely written, and whether the run finished
    (:meth:`finished`; then :attr:`note` says why when no run.json said so)."""

    def __init__(self, root: Path, *, settle: float = 0.5, clock=time.monotonic,
                 gone_after: float | None = None) -> None:  # fmt: skip
        self.root, self.settle, self.clock = Path(root), settle, clock
        self._seen: dict[Path, tuple[tuple, float]] = {}  # path -> (signature, since)
        self._complete: dict[Path, tuple] = {}  # path -> its signature when taken
        self._start_summary = self._summary()
        self.gone_after = GONE_AFTER if gone_after is None else gone_after
        self._quiet_since, self._missing_since, self.note = None, None, None

    @property
    def gone(self) -> bool:
        return self.note is not None

    def _summary(self) -> str | None:
        try:
            return (self.root / "run.json").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def finished(self) -> bool:
        """Whether the run is over (see the module docstring); InputError once the run folder
        has been gone for ``gone_after`` seconds (removed or moved while followed)."""
        if not self.root.is_dir():
            now = self.clock()
            self._missing_since = now if self._missing_since is None else self._missing_since
            if now - self._missing_since >= self.gone_after:
                raise InputError(f"{self.root} was removed or moved while it was followed")
            return False
        self._missing_since = None
        text = self._summary()
        if text is not None and text != self._start_summary:
            return _parses(text)  # written while we watched (else: being written; look again)
        from alignctl.train.rundir import is_train_run

        train = is_train_run(self.root)
        alive = self._writer_alive(train)
        # an earlier run.json is believed once nothing writes the run (a resume starting now
        # takes the lock, then removes it), unless it says an `alignctl train` run stopped
        # part way: a resume may continue that, and only a writer known gone rules it out
        over = text is not None and _parses(text) and (not train or not _interrupted(text))
        if not (alive is False or (over and alive is None)):
            self._quiet_since = None
            return False
        now = self.clock()
        self._quiet_since = now if self._quiet_since is None else self._quiet_since
        if now - self._quiet_since < self.gone_after:
            return False
        if text is None:
            self.note = (f"the training of {self.root} stopped without writing run.json "
                         "(killed?): the report covers the checkpoints it wrote")  # fmt: skip
        elif _interrupted(text):
            self.note = (f"the run in {self.root} was interrupted and nothing is continuing "
                         "it: the report covers the checkpoints it wrote")  # fmt: skip
        return True

    def _writer_alive(self, train: bool) -> bool | None:
        """True while a writer holds the run, False once it is known to be gone, None when
        that cannot be told: an `alignctl train` run by its folder lock (its log and resume
        state are written under it) and, where the lock cannot be read (btrfs, overlayfs), by
        the writer record the lock's holder keeps; any other by its writer record."""
        from alignctl.runs.writer import writer_alive
        from alignctl.train.lock import lock_held

        held = lock_held(self.root) if train else None
        return held if held is not None else writer_alive(self.root)

    def ready(self, final: bool = False) -> list:
        """The checkpoints known to be complete, ordered by step; ``final`` (the run has
        finished, nothing is being written) takes every file that opens."""
        from alignctl.runs.checkpoints import discover_checkpoints

        folder = self.root / "checkpoints"
        if os.path.lexists(folder) and not folder.is_dir():  # nothing will ever land in it
            raise InputError(f"{folder} is not a folder: checkpoints cannot land in it")
        try:
            refs = discover_checkpoints(folder if folder.is_dir() else self.root)
        except InputError:
            return []  # nothing yet
        now, out = self.clock(), []
        for ref in refs:
            p = ref.path
            try:
                sig = _signature(p)
            except OSError:
                continue  # removed meanwhile (a trainer keeping only its last checkpoints)
            # taken before and unchanged, or alignctl's own (whole once visible): complete. A
            # file rewritten in place since it was taken (Lightning's last.ckpt) is new again.
            if self._complete.get(p) == sig or _is_own_file(p):
                self._complete[p] = sig
                out.append(ref)
                continue
            self._complete.pop(p, None)
            prev = self._seen.get(p)
            if prev is None or prev[0] != sig:
                self._seen[p] = prev = (sig, now)
            # once the run has finished nothing is being written: a file that still does not
            # open is analysed anyway, so its error is reported rather than skipped
            if final or (now - prev[1] >= self.settle and _opens(p)):
                self._complete[p] = sig
                out.append(ref)
        return out

    def state(self, refs: list) -> list:
        """What a report of ``refs`` (from :meth:`ready`) covers: each path and its signature
        when taken, so a checkpoint rewritten under the same name is analysed again."""
        return [(r.path, self._complete.get(r.path)) for r in refs]
