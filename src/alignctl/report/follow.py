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
a run without a run.json (killed, crashed) and an interrupted ``alignctl train`` run (which a
resume could continue), with a note. A writer that cannot be told (no record, another host,
no ``/proc``) is never taken for gone. The watching
uses ``watchdog`` (file-system events wake the loop) when it is installed, else polling;
either way the loop also wakes every ``poll`` seconds, so nothing depends on an event being
delivered. The library never prints: each new report goes to the caller's ``on_report``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from alignctl.errors import InputError
from alignctl.report.monitor_log import LOG_NAME, is_monitor_run, read_log, report_from_log
from alignctl.report.run_watcher import GONE_AFTER, RunWatcher

__all__ = ["APPEAR", "GONE_AFTER", "RunWatcher", "follow_run", "plain_line"]


def _log_state(root: Path) -> tuple | None:
    """The monitor log's identity and size (a monitor re-created with ``overwrite`` starts a
    new file), or None when there is none."""
    try:
        st = (root / LOG_NAME).stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


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
