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

import fnmatch
import hashlib
import os
import stat as stat_module
import time
from dataclasses import dataclass
from pathlib import Path

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
        for root, folders, files in os.walk(self.folder):
            folders[:] = [f for f in folders if not f.startswith(".") and f not in SKIPPED_FOLDERS]
            for name in files:
                if name.endswith(SPEC_SUFFIXES) and not any(fnmatch.fnmatch(name, p) for p in IGNORED):
                    yield Path(root) / name
