"""The watched folder, read as desired state: which spec files exist, settled, with what content.

A file counts only once its size and mtime stayed the same for `settle` seconds, so a
spec written in two parts, or copied slowly, is never read half-written; or, sooner, once the
writer closed it (inotify's close-after-write, or a rename into place) and nothing touched it for
QUIET_AFTER_CLOSE seconds since: `echo a > x.yaml; echo b >> x.yaml` is still read whole, and a spec
written in parts with pauses between them is covered by the daemon's invalid-grace. Editor temp
and swap files are ignored. The folder itself is never modified.

Only regular files are read, opened without blocking (a FIFO named `x.yaml` would otherwise stop
the daemon), and at most MAX_SPEC_BYTES of each: a larger file is reported as one, by the hash
of what was read.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import stat as stat_module
import time
from dataclasses import dataclass
from pathlib import Path

from runner.fsutil import walk
from runner.readers import describe_kind, open_regular
from runner.spec.jobs import MAX_SPEC_BYTES, SPEC_SUFFIXES, looks_like_spec

QUIET_AFTER_CLOSE = 0.05
IGNORED = (".*", "*~", "#*#", "*.swp", "*.swx", "*.tmp", "*.bak", "*.orig", "4913")
SKIPPED_FOLDERS = {"runs", "node_modules", "__pycache__", "site-packages"}


@dataclass(frozen=True)
class SpecFile:
    path: str
    sha256: str
    content: bytes
    stable_for: float
    """Seconds its size and mtime have not changed."""
    oversized: bool = False
    """Larger than a spec may be: `content` is its first MAX_SPEC_BYTES + 1 bytes."""
    author: int | None = None
    """The uid that owns the file: what the spec may read is what they could (runner.confine)."""


class Scanner:
    def __init__(self, folder: Path, settle: float) -> None:
        self.folder = folder.resolve()
        self.settle = settle
        self._seen: dict[str, tuple[int, int, float]] = {}
        """path -> (size, mtime_ns, monotonic time first seen with them)"""
        self._read: dict[str, tuple[tuple[int, int], SpecFile | str | None]] = {}
        """path -> (the signature it had when read, what was read or why it could not be); a settled
        file is read once"""
        self.ignored: dict[str, str] = {}
        """path -> why it is not read (not a regular file, unreadable), as of the last scan"""
        self._closed: dict[str, float] = {}
        """path -> when its writer closed it, while that is the last event seen for it"""

    def note_closed(self, path: str) -> None:
        """Its writer closed it, or it was renamed into place (called from the file watcher's thread)."""
        self._closed[path] = time.monotonic()

    def note_changed(self, path: str) -> None:
        """It is being written (called from the file watcher's thread)."""
        self._closed.pop(path, None)

    def scan(self) -> tuple[list[SpecFile], set[str], float | None]:
        """(settled spec files, every spec path present, seconds until a pending file may settle)."""
        now = time.monotonic()
        settled, present, wait = [], set(), None
        self.ignored = {}
        for path in self._candidates():
            key = str(path)
            if not _utf8(key):  # the store, the logs and the page hold text: such a name cannot be a job's
                self.ignored[key.encode("utf-8", "surrogateescape").decode("utf-8", "replace")] = \
                    "its name is not valid UTF-8; rename it"
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            if not stat_module.S_ISREG(stat.st_mode):
                self.ignored[key] = f"{describe_kind(stat.st_mode)}, not a regular file"
                continue
            present.add(key)
            signature = (stat.st_size, stat.st_mtime_ns)
            previous = self._seen.get(key)
            if previous is None or previous[:2] != signature:
                self._seen[key] = previous = (*signature, now)
            stable_for = now - previous[2]
            remaining = self.settle - stable_for
            closed = self._closed.get(key)
            if closed is not None:
                remaining = min(remaining, closed + QUIET_AFTER_CLOSE - now)
            if remaining > 0:
                wait = remaining if wait is None else min(wait, remaining)
                continue
            cached = self._read.get(key)
            if cached is None or cached[0] != signature:
                cached = (signature, self._read_spec(path, key))
                self._read[key] = cached
            if isinstance(cached[1], str):
                self.ignored[key] = cached[1]
            elif cached[1] is not None:
                settled.append(SpecFile(cached[1].path, cached[1].sha256, cached[1].content, stable_for,
                                        cached[1].oversized, stat.st_uid))
        for gone in set(self._seen) - present:
            del self._seen[gone]
            self._read.pop(gone, None)
            self._closed.pop(gone, None)
        return settled, present, wait

    @staticmethod
    def _read_spec(path: Path, key: str) -> SpecFile | str | None:
        """The spec in a file, why it cannot be read, or None when it is no spec."""
        try:
            with open_regular(path) as handle:
                content = handle.read(MAX_SPEC_BYTES + 1)
        except OSError as error:
            return f"unreadable: {error.strerror or error}"
        if not looks_like_spec(content[:65536].decode("utf-8", errors="replace")):
            return None
        return SpecFile(key, hashlib.sha256(content).hexdigest(), content, 0.0, len(content) > MAX_SPEC_BYTES)

    def _candidates(self):
        for root, files in walk(self.folder, lambda name: not name.startswith(".") and name not in SKIPPED_FOLDERS):
            for name in files:
                if name.endswith(SPEC_SUFFIXES) and not any(fnmatch.fnmatch(name, p) for p in IGNORED):
                    yield Path(root) / name


class Watcher:
    """File events on the folder, as hints that wake the loop (the scans are the truth, and a rescan repairs
    whatever events miss): inotify, else polling (out of inotify watches), else, where the tree is too
    deep for watchdog's recursive observers (they recurse, and a thousand folders deep raises
    RecursionError), the folder's own level only. Started afresh when the folder is replaced (a redeploy
    swaps it: the old one's events never come) or an observer's thread died."""

    def __init__(self, folder: Path, scanner: Scanner, poll: bool, wake, log) -> None:
        self.folder, self.scanner, self.poll, self.wake, self.log = folder, scanner, poll, wake, log
        self.observer = None
        self.watching: tuple[int, int] | None = None
        """(device, inode) of the folder the observer watches."""

    def start(self) -> None:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        candidates = [] if self.poll else [(Observer, True)]
        candidates += [(lambda: PollingObserver(timeout=1.0), True), (Observer, False)]
        for make, recursive in candidates:
            observer = make()
            try:
                identity = _identity(self.folder)
                observer.schedule(self._handler(), str(self.folder), recursive=recursive)
                observer.start()
            except (OSError, RecursionError) as error:  # out of inotify watches, a tree too deep, a folder gone
                self.log("watch_fallback", error=f"{type(error).__name__}: {str(error)[:200]}",
                         detail="watching less of the folder; the rescan finds the rest")
                with contextlib.suppress(Exception):
                    observer.stop()
                continue
            self.observer, self.watching = observer, identity
            return

    def keep_watching(self) -> None:
        """Start again when the folder is not the one watched any more, or the observer stopped."""
        alive = self.observer is not None and self.observer.is_alive() and all(
            emitter.is_alive() for emitter in list(self.observer.emitters))
        identity = _identity(self.folder)
        if identity is None or (alive and identity == self.watching):
            return  # gone (being replaced): watched again once it is back
        self.log("watch_restarted", folder=str(self.folder),
                 reason="the folder was replaced" if alive else "its observer stopped")
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.observer is not None:
            with contextlib.suppress(Exception):
                self.observer.stop()
            self.observer = None

    def _handler(self):
        from watchdog.events import FileSystemEventHandler

        scanner, wake = self.scanner, self.wake

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event):
                # Reads (ours too: the scan opens specs) raise open/close-without-write events; only
                # changes matter. A close after writing (or a rename into place) may end the settle wait.
                if event.event_type in ("created", "modified"):
                    scanner.note_changed(event.src_path)
                elif event.event_type == "closed":
                    scanner.note_closed(event.src_path)
                elif event.event_type == "moved":
                    scanner.note_closed(event.dest_path)
                elif event.event_type != "deleted":
                    return
                wake()

        return Wake()


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # os.fsdecode keeps undecodable bytes as lone surrogates
        return False
    return True
