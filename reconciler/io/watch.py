"""The kernel's file events on the incoming tree: which directories and files were touched
since the last pass (inotify on Linux, through ``watchdog``).

Events only shorten the wait. They are never the one way a file is found: a file another
host writes onto a shared filesystem raises no event here, a full event queue drops events,
and a watch can fail to be placed (the per-user inotify limit). Discovery's directory mtimes
and its sweeps and resyncs find every file without them; events make a late file in an old
directory, or a file rewritten in place, known at the next pass instead of the next sweep.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChangeHints:
    """What the kernel said changed: directories to list and files to stat at once, and
    ``overflowed`` when events may have been missed (then every directory is swept)."""

    directories: frozenset[str] = frozenset()
    files: frozenset[str] = frozenset()
    overflowed: bool = False

    def __or__(self, other: ChangeHints) -> ChangeHints:
        return ChangeHints(
            self.directories | other.directories,
            self.files | other.files,
            self.overflowed or other.overflowed,
        )


#: Event types that say nothing about a change (a file opened, or closed unwritten).
_QUIET_EVENTS = frozenset({"opened", "closed_no_write"})


class IncomingWatcher:
    """Collects the directories and files under ``root`` touched since the last
    :meth:`drain`, from a watchdog observer thread.

    The observer is started by the first :meth:`drain` that finds the root present, and
    again whenever it died; the hints after a (re)start say ``overflowed``, since what
    happened before it is unknown.
    """

    def __init__(self, root: Path, suffix: str = ".hdf5") -> None:
        self.root = root.absolute()
        self._suffix = suffix
        self._lock = threading.Lock()
        self._directories: set[str] = set()
        self._files: set[str] = set()
        self._overflowed = False
        self._observer: Any = None
        self._failed = False

    def drain(self) -> ChangeHints:
        """What was touched since the last call (and the watch started if it is not)."""
        self._ensure_running()
        with self._lock:
            hints = ChangeHints(
                frozenset(self._directories), frozenset(self._files), self._overflowed
            )
            self._directories.clear()
            self._files.clear()
            self._overflowed = False
        return hints

    def put_back(self, hints: ChangeHints) -> None:
        """Hints a pass drained but could not act on (it failed): the next pass gets them."""
        with self._lock:
            self._directories |= hints.directories
            self._files |= hints.files
            self._overflowed = self._overflowed or hints.overflowed

    def stop(self) -> None:
        """Stop the observer thread, if one runs."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    @property
    def running(self) -> bool:
        """Whether events are being received."""
        return self._observer is not None and self._observer.is_alive()

    def _ensure_running(self) -> None:
        if self.running or not self.root.is_dir():
            return
        from watchdog.observers import Observer

        self.stop()
        observer = Observer()
        try:
            observer.schedule(_Handler(self), str(self.root), recursive=True)
            observer.start()
        except OSError as exc:
            if not self._failed:
                log.warning(
                    "no file events for %s (%s): new files are found by directory "
                    "mtimes and sweeps only",
                    self.root,
                    exc.strerror or exc,
                )
            self._failed = True
            return
        if self._failed:
            log.info("file events for %s are received again", self.root)
        self._failed = False
        self._observer = observer
        with self._lock:
            self._overflowed = True

    def _touched(self, path: str, is_directory: bool) -> None:
        with self._lock:
            if is_directory:
                self._directories.add(path)
                self._directories.add(os.path.dirname(path))
            elif path.endswith(self._suffix):
                self._files.add(path)
                self._directories.add(os.path.dirname(path))


class _Handler:
    """watchdog's event handler interface, passing each event's paths on."""

    def __init__(self, watcher: IncomingWatcher) -> None:
        self._watcher = watcher

    def dispatch(self, event: Any) -> None:
        if event.event_type in _QUIET_EVENTS:
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path:
                self._watcher._touched(os.fsdecode(path), event.is_directory)
