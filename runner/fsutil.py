"""Writing files so that a crash never leaves a half-written one: temp file, fsync, rename."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from runner.readers import open_regular

HASH_CACHE_MIN_BYTES = 16 * 1024 * 1024
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomically(path: Path, data: str | bytes) -> None:
    """Replace `path` with `data` in one step; readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    import tempfile  # here: runner validate, which imports this module, writes nothing

    payload = data.encode("utf-8") if isinstance(data, str) else data
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual mode
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def give_usual_modes(folder: Path) -> None:
    """Give every file and folder under `folder` the mode the umask gives new ones: some writers
    (transformers' safetensors files) make 0600 files, which a group sharing the results cannot read."""
    for root, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(root, name), 0o777 & ~_UMASK)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~_UMASK)
    os.chmod(folder, 0o777 & ~_UMASK)


def cache_directory() -> Path:
    """Where runner keeps facts it can always recompute (hashes, parsed headers); never anything else."""
    base = os.environ.get("RUNNER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "runner")
    return Path(base)


def stat_key(path: Path, *extra: object) -> str:
    """A key that changes whenever the file does (path, size, mtime)."""
    import hashlib  # here: OpenSSL's start is a cost runner validate need not pay unless it hashes

    stat = path.stat()
    text = "|".join(map(str, (path.resolve(), stat.st_size, stat.st_mtime_ns, *extra)))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached_record(cache_file: Path, compute: Callable[[], dict], *keys: str) -> dict:
    """A JSON record kept in the cache: read back when it has `keys`, else computed and kept.
    A cache that cannot be read or written only costs time."""
    with suppress(OSError, ValueError):
        record = json.loads(cache_file.read_text())
        if isinstance(record, dict) and all(key in record for key in keys):
            return record
    record = compute()
    with suppress(OSError):
        write_atomically(cache_file, json.dumps(record))
    return record


def file_sha256(path: Path) -> str:
    """sha256 of a file; big files (model weights) are cached by path, size and mtime."""
    if path.stat().st_size < HASH_CACHE_MIN_BYTES:
        return _sha256(path)
    cache_file = cache_directory() / "sha256" / f"{stat_key(path)}.json"
    return cached_record(cache_file, lambda: {"path": str(path), "sha256": _sha256(path)}, "sha256")["sha256"]


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open_regular(path) as handle:  # a FIFO or a device (a data file swapped for one) is refused
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


MAX_FOLDER_DEPTH = 32
"""Levels of folders below a searched folder that are entered (specs are a level or two down)."""


def walk(root: Path, keep: Callable[[str], bool], max_depth: int = MAX_FOLDER_DEPTH):
    """(folder, its file names), top-down and sorted, of `root` and the folders below it whose names
    `keep` accepts, at most `max_depth` levels down. Iterative: os.walk (before Python 3.12) recurses, and
    a tree a thousand levels deep in a watched folder raised RecursionError in every scan. Links to
    folders are not followed; unreadable folders are passed over."""
    pending = [(str(root), 0)]
    while pending:
        folder, depth = pending.pop()
        try:
            with os.scandir(folder) as entries:
                listed = sorted(entries, key=lambda entry: entry.name)
        except OSError:
            continue
        files, below = [], []
        for entry in listed:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if depth < max_depth and keep(entry.name):
                        below.append((entry.path, depth + 1))
                else:
                    files.append(entry.name)
            except OSError:
                continue
        yield folder, files
        pending.extend(reversed(below))
