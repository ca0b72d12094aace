"""The watched folder, read as desired state: which spec files exist, settled, with what content.

A file counts only once its size and mtime stayed the same for `settle` seconds, so a
spec written in two parts, or copied slowly, is never read half-written. Editor temp and
swap files are ignored. The folder itself is never modified.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from runner.spec.jobs import SPEC_SUFFIXES, looks_like_spec

IGNORED = (".*", "*~", "#*#", "*.swp", "*.swx", "*.tmp", "*.bak", "*.orig", "4913")
SKIPPED_FOLDERS = {"runs", "node_modules", "__pycache__", "site-packages"}


@dataclass(frozen=True)
class SpecFile:
    path: str
    sha256: str
    content: bytes
    stable_for: float
    """Seconds its size and mtime have not changed."""


class Scanner:
    def __init__(self, folder: Path, settle: float) -> None:
        self.folder = folder.resolve()
        self.settle = settle
        self._seen: dict[str, tuple[int, int, float]] = {}
        """path -> (size, mtime_ns, monotonic time first seen with them)"""
        self._read: dict[str, tuple[tuple[int, int], SpecFile | None]] = {}
        """path -> (the signature it had when read, what was read); a settled file is read once"""

    def scan(self) -> tuple[list[SpecFile], set[str], float | None]:
        """(settled spec files, every spec path present, seconds until a pending file may settle)."""
        now = time.monotonic()
        settled, present, wait = [], set(), None
        for path in self._candidates():
            try:
                stat = path.stat()
            except OSError:
                continue
            key = str(path)
            present.add(key)
            signature = (stat.st_size, stat.st_mtime_ns)
            previous = self._seen.get(key)
            if previous is None or previous[:2] != signature:
                self._seen[key] = (*signature, now)
                wait = self.settle if wait is None else min(wait, self.settle)
                continue
            stable_for = now - previous[2]
            remaining = self.settle - stable_for
            if remaining > 0:
                wait = remaining if wait is None else min(wait, remaining)
                continue
            cached = self._read.get(key)
            if cached is None or cached[0] != signature:
                cached = (signature, self._read_spec(path, key))
                self._read[key] = cached
            if cached[1] is not None:
                settled.append(SpecFile(cached[1].path, cached[1].sha256, cached[1].content, stable_for))
        for gone in set(self._seen) - present:
            del self._seen[gone]
            self._read.pop(gone, None)
        return settled, present, wait

    @staticmethod
    def _read_spec(path: Path, key: str) -> SpecFile | None:
        try:
            content = path.read_bytes()
        except OSError:
            return None
        if not looks_like_spec(content[:65536].decode("utf-8", errors="replace")):
            return None
        return SpecFile(key, hashlib.sha256(content).hexdigest(), content, 0.0)

    def _candidates(self):
        for root, folders, files in os.walk(self.folder):
            folders[:] = [f for f in folders if not f.startswith(".") and f not in SKIPPED_FOLDERS]
            for name in files:
                if name.endswith(SPEC_SUFFIXES) and not any(fnmatch.fnmatch(name, p) for p in IGNORED):
                    yield Path(root) / name
