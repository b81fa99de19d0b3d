"""``alignctl analyze --follow``: analyse a run directory while training writes it.

A checkpoint is analysed once it is completely written: alignctl's own files (``alignctl
train``, the monitor) are written to a hidden temporary name and renamed into place
(:mod:`alignctl.runs.atomic`), so such a file is complete as soon as it is visible (its
safetensors header names ``alignctl_version``); any other file is taken once its size and
modification time have not changed for ``settle`` seconds and it opens as a checkpoint. A run
made only of ``alignment.jsonl`` (the monitor's log) is re-read whenever it grows.

The run is finished when ``run.json`` appears, or changes, after following began. A run.json
that was already there (a run finished earlier; or the old one of a run that ``train
--resume`` is about to continue, which it removes as it starts) is believed only once nothing
has written the run for ``GONE_AFTER`` seconds: no writer alive and run.json unchanged. The
writer is an ``alignctl train`` run's folder lock (held from its first write to its last;
:mod:`alignctl.train.lock`), or the process a monitor records in the folder
(:mod:`alignctl.runs.writer`); a writer known to be gone for ``GONE_AFTER`` seconds also ends
a run without a run.json (killed, crashed) and an interrupted one, with a note. A writer that
cannot be told (no record, another host, no ``/proc``) is never taken for gone. The watching
uses ``watchdog`` (file-system events wake the loop) when it is installed, else polling;
either way the loop also wakes every ``poll`` seconds, so nothing depends on an event being
delivered. The library never prints: each new report goes to the caller's ``on_report``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from alignctl.errors import InputError
from alignctl.report.monitor_log import LOG_NAME, is_monitor_run, read_log, report_from_log


def _is_own_file(path: Path) -> bool:
    """A safetensors file that alignctl wrote (atomically: complete once visible)."""
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or n > 100_000_000:
                return False
            header = json.loads(fh.read(n))
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
        json.loads(text)
        return True
    except ValueError:
        return False


def _ended(text: str) -> bool:
    """run.json says the run ended (not interrupted part way: a resume may continue it)."""
    try:
        summary = json.loads(text)
    except ValueError:
        return False  # being written by another tool
    return isinstance(summary, dict) and not summary.get("interrupted", False)


def _log_state(root: Path) -> tuple | None:
    """The monitor log's identity and size (a monitor re-created with ``overwrite`` starts a
    new file), or None when there is none."""
    try:
        st = (root / LOG_NAME).stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


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
        alive = self._writer_alive()
        ended = text is not None and _ended(text)
        # an earlier run.json saying the run ended is believed once nothing writes the run (a
        # resume starting now takes the lock, then removes it); without one, or for a run
        # stopped part way, only a writer known to be gone ends it (unknown may still write)
        if not (alive is False or (ended and alive is None)):
            self._quiet_since = None
            return False
        now = self.clock()
        self._quiet_since = now if self._quiet_since is None else self._quiet_since
        if now - self._quiet_since < self.gone_after:
            return False
        if text is None:
            self.note = (f"the training of {self.root} stopped without writing run.json "
                         "(killed?): the report covers the checkpoints it wrote")  # fmt: skip
        elif not ended:
            self.note = (f"the run in {self.root} was interrupted and nothing is writing it: "
                         "the report covers the checkpoints it wrote")  # fmt: skip
        return True

    def _writer_alive(self) -> bool | None:
        """True while a writer holds the run, False once it is known to be gone, None when
        that cannot be told: an `alignctl train` run by its folder lock (its log and resume
        state are written under it), any other by the process its writer record names."""
        from alignctl.runs.writer import writer_alive
        from alignctl.train.lock import lock_held
        from alignctl.train.rundir import is_train_run

        return lock_held(self.root) if is_train_run(self.root) else writer_alive(self.root)

    def ready(self, final: bool = False) -> list:
        """The checkpoints known to be complete, ordered by step; ``final`` (the run has
        finished, nothing is being written) takes every file that opens."""
        from alignctl.runs.checkpoints import discover_checkpoints

        folder = self.root / "checkpoints"
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


class _Waker:
    """Sleeps until a file-system event under ``root`` (watchdog) or ``poll`` seconds."""

    def __init__(self, root: Path, poll: float) -> None:
        self.poll, self.event, self.observer = poll, threading.Event(), None
        try:
            import logging

            # watchdog logs a harmless race at shutdown; without a handler, Python's
            # last-resort handler would print it on stderr
            logging.getLogger("watchdog").addHandler(logging.NullHandler())
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer

            waker = self

            class Handler(FileSystemEventHandler):
                def on_any_event(self, event):
                    waker.event.set()

            self.observer = Observer()
            self.observer.schedule(Handler(), str(root), recursive=True)
            self.observer.start()
        except Exception:  # not installed, or no inotify watches left: poll instead
            self.observer = None

    def wait(self) -> None:
        if self.observer is None:
            time.sleep(self.poll)
            return
        self.event.wait(self.poll)
        self.event.clear()
        time.sleep(0.05)  # let a burst of events (one file written) settle

    def close(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)


APPEAR = 60.0  # seconds a run folder may take to appear: training starts (imports) first


def _await_folder(root: Path, appear: float, poll: float) -> None:
    """Wait up to ``appear`` seconds for ``root`` to exist (``train --out R & analyze --follow
    R`` starts following before training has made R); InputError if it does not appear or is
    not a folder."""
    deadline = time.monotonic() + appear
    while not root.exists() and time.monotonic() < deadline:
        time.sleep(min(poll, 0.2))
    if not root.is_dir():
        why = "it is not a folder" if root.exists() else f"it did not appear within {appear:g} s"
        raise InputError(f"--follow needs a run directory; {root} is not one ({why})")


def follow_run(root: Path, *, open_run: Callable[[], object], analyse: Callable[[object], dict],
               on_report: Callable[[dict], None], poll: float = 0.5, settle: float = 0.5,
               timeout: float | None = None, appear: float = APPEAR) -> dict | None:  # fmt: skip
    """Analyse ``root`` each time a checkpoint (or monitor line) lands, until the run is
    finished (or ``timeout`` seconds pass); returns the last report. ``open_run()`` builds the
    Run (config, model, data) and ``analyse(run)`` reports on ``run.checkpoints``, which this
    sets to the complete ones (use a cache, so that each call measures only new ones)."""
    root = Path(root)
    _await_folder(root, appear, poll)
    watcher, waker = RunWatcher(root, settle=settle), _Waker(root, poll)
    run, report, shown, start = None, None, None, time.monotonic()
    try:
        while True:
            done = watcher.finished()  # before the scan: the last scan sees every checkpoint
            if is_monitor_run(root):
                state = _log_state(root)
                try:
                    if state not in (shown, None) and read_log(root / LOG_NAME)[0]:
                        shown, report = state, report_from_log(root)  # maybe no line yet
                        on_report(report)
                except InputError:
                    if _log_state(root) == state:
                        raise
                    # else removed or replaced while read (a monitor re-created): look again
            else:
                refs = watcher.ready(final=done)
                state = watcher.state(refs)
                if refs and state != shown:
                    run = run or open_run()
                    run.checkpoints = refs
                    try:
                        report = analyse(run)
                    except InputError:
                        if all(r.path.exists() for r in refs):
                            raise
                        continue  # one was removed while it was read: look again at once
                    shown = state
                    on_report(report)
            if done or (timeout is not None and time.monotonic() - start > timeout):
                if watcher.note and report is not None:
                    report.setdefault("notes", []).append(watcher.note)
                return report
            waker.wait()
    finally:
        waker.close()


def plain_line(entry: dict, names: list[str]) -> str:
    """One checkpoint as a line of ``name=value`` fields (piped ``--follow`` output)."""

    def fmt(v, pct=False):
        return "-" if v is None else (f"{v:.1%}" if pct else f"{v:.4g}")

    parts = [f"step={entry['step']}", f"train_acc={fmt(entry.get('train_accuracy'), True)}",
             f"test_acc={fmt(entry.get('test_accuracy'), True)}"]  # fmt: skip
    parts += [f"{n}={fmt(entry['metrics'].get(n))}" for n in names]
    return "  ".join(parts + [f"verdict={entry.get('verdict')}"])
