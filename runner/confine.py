"""What a spec may make runner read on its behalf.

`runner validate`, `plan` and `run` read as the user who runs them: whatever a spec names, they read
only what that user can. The watch daemon reads as itself, for specs that anyone who can write to
its folder drops there, so without a rule it is a confused deputy: a spec whose data is a link to the
daemon's HF token, an absolute path to another team's data or `~/.netrc` would have the daemon read
it, train on it, and quote it back in diagnostics that the whole group sees.

Under the daemon every check, plan and run is *confined*. A file a spec names, or one found through
it (a folder's files, a dataset README's globs, a model folder's files), is read only when its
resolved path (links followed) lies

- inside the watched folder, and the spec's author (the owner of the spec file) could read it
  there themselves: every folder on the way searchable, and the file readable, by its mode bits; or
- under a root the operator granted to every spec: the hub cache, the run root (`{job: NAME}`
  models), and the folders named with `runner watch --allow-read`.

Confined, runner also never quotes what it read (a CSV header's cells, a row's keys, a file's first
bytes) in a diagnostic: `quoted` says "(not shown under the daemon)" instead, because the daemon's
diagnostics are read by everyone who reads its status.

The rule travels with the work: the daemon hands it to its planning worker with each request, and
the plan records it (`Plan.confinement`), so `runner run --plan` enforces it on every node, however
the run was started. Files are checked where they are opened (`runner.readers.open_regular` checks
the opened descriptor's own path, so a link swapped after a check gains nothing) and where a path is
resolved, before a library such as transformers opens it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ENVIRONMENT = "RUNNER_CONFINE"
"""The active confinement, as JSON, for processes runner starts (torchrun's ranks)."""
NOT_SHOWN = "(not shown under the daemon)"
"""What a diagnostic says instead of text it read from a file, when confined."""


MAX_TREE_ENTRIES = 10_000
"""Files in a model folder checked one by one before a library reads it; real ones hold dozens."""


class Refused(OSError):
    """A path outside what a confined spec may read. An OSError whose `str()` is the reason, like
    runner.readers.UnreadableFile, so every caller that reports unreadable files reports these."""


class Missing(OSError):
    """A path a spec names where nothing can be read: absent, or a link that never reaches a file."""


@dataclass(frozen=True)
class Confinement:
    folder: str
    """The watched folder, resolved."""
    author: int | None
    """The uid that owns the spec file; None: nobody's permissions are checked inside the folder."""
    granted: tuple[str, ...] = ()
    """Resolved folders every spec may read: the hub cache, the run root, --allow-read folders."""

    def to_json(self) -> dict:
        return {"folder": self.folder, "author": self.author, "granted": list(self.granted)}

    @classmethod
    def from_json(cls, record: dict) -> Confinement:
        return cls(str(record["folder"]), record.get("author"), tuple(map(str, record.get("granted") or ())))

    def refusal(self, resolved: str, *, folder: bool = False) -> str | None:
        """Why a resolved path may not be read (None when it may). `folder`: it is listed, not read."""
        if any(_within(resolved, root) for root in self.granted):
            return None
        if not _within(resolved, self.folder):
            return (f"it resolves to {resolved}, outside the watched folder; under the watch daemon a spec reads "
                    f"only files in its folder and the folders the daemon allows ({self.describe_granted()})")
        if self.author is None or self.author == 0 or self.author == os.geteuid():
            return None
        blocked = _unreadable_by(self.author, self.folder, resolved, folder)
        if blocked:
            return (f"its author (uid {self.author}) may not read {blocked}; under the watch daemon a spec reads "
                    "only what its author could read")
        return None

    def describe_granted(self) -> str:
        return ", ".join(self.granted) or "none"


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _unreadable_by(uid: int, top: str, resolved: str, folder: bool) -> str | None:
    """The first place on the way from `top` down to `resolved` that `uid` may not pass or read."""
    relative = os.path.relpath(resolved, top)
    parts = [] if relative == "." else relative.split(os.sep)
    place = top
    for index in range(len(parts) + 1):
        if index:
            place = os.path.join(place, parts[index - 1])
        last = index == len(parts)
        try:
            info = os.stat(place)
        except OSError:
            return None  # it is not there: whoever opens it reports that
        is_folder = stat.S_ISDIR(info.st_mode)
        needed = (stat.S_IRUSR if last else 0) | (stat.S_IXUSR if is_folder and (not last or folder) else 0)
        if needed and not _permits(uid, info, needed):
            return place
    return None


def _permits(uid: int, info: os.stat_result, owner_bits: int) -> bool:
    """Whether `uid` has the owner-scaled `owner_bits` on a file, by its mode bits (owner, group, other)."""
    if info.st_uid == uid:
        bits = owner_bits
    elif info.st_gid in _groups(uid):
        bits = owner_bits >> 3
    else:
        bits = owner_bits >> 6
    return info.st_mode & bits == bits


@functools.lru_cache(maxsize=64)
def _groups(uid: int) -> frozenset[int]:
    import pwd

    try:
        user = pwd.getpwuid(uid)
    except KeyError:  # a uid without an account: only what "other" may
        return frozenset()
    return frozenset(os.getgrouplist(user.pw_name, user.pw_gid))


# --- the active confinement ---------------------------------------------------------------------------

_active: list[Confinement | None] = []


def active() -> Confinement | None:
    """The confinement in force: the innermost `applied`, else the one in the environment, else None."""
    if _active:
        return _active[-1]
    return _from_environment(os.environ.get(ENVIRONMENT, ""))


@functools.lru_cache(maxsize=4)
def _from_environment(text: str) -> Confinement | None:
    return Confinement.from_json(json.loads(text)) if text else None


@contextlib.contextmanager
def applied(confinement: Confinement | None) -> Iterator[None]:
    """Confine the reads inside the block (None: leave things as they are); children started inside it
    inherit it through the environment."""
    if confinement is None:
        yield
        return
    saved = os.environ.get(ENVIRONMENT)
    _active.append(confinement)
    os.environ[ENVIRONMENT] = json.dumps(confinement.to_json())
    try:
        yield
    finally:
        _active.pop()
        if saved is None:
            os.environ.pop(ENVIRONMENT, None)
        else:
            os.environ[ENVIRONMENT] = saved


def named_path(folder: Path, written: str) -> Path:
    """A path as a spec writes it (relative to the spec's folder), where something is: Refused when the
    active confinement forbids it (whether or not anything is there: no existence oracle for what a
    spec may not read), else Missing when nothing is there (a link loop said as one)."""
    location = folder / Path(written).expanduser()
    check(location, written, folder=os.path.isdir(location))
    try:
        location.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise Missing(f"{written} is a symbolic link that loops (it never reaches a file)") from None
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            raise Missing(f"{written} does not exist") from None
        raise
    return location


def check(path: Path | str, written: str | None = None, *, folder: bool = False) -> Path:
    """`path` resolved (links followed), when the active confinement lets a spec read it; else Refused,
    naming it as the spec wrote it (`written`). Without a confinement: the resolved path."""
    resolved = os.path.realpath(path)
    confinement = active()
    if confinement is not None:
        why = confinement.refusal(resolved, folder=folder)
        if why:
            raise Refused(f"{written or path}: {why}")
    return Path(resolved)


def check_descriptor(descriptor: int, path: Path | str) -> None:
    """The opened file's own path checked (not the name it was opened by: a link may have changed)."""
    confinement = active()
    if confinement is None:
        return
    try:
        resolved = os.readlink(f"/proc/self/fd/{descriptor}")
    except OSError:  # no /proc: the name, resolved now
        resolved = os.path.realpath(path)
    why = confinement.refusal(resolved)
    if why:
        raise Refused(f"{path}: {why}")


def check_tree(folder: Path, written: str | None = None) -> None:
    """A folder a library will read as a whole (a model), and every file in it, checked."""
    if active() is None:
        return
    check(folder, written, folder=True)
    for count, entry in enumerate(os.scandir(folder)):
        if count >= MAX_TREE_ENTRIES:
            raise Refused(f"{written or folder}: more than {MAX_TREE_ENTRIES:,} entries; a model folder holds dozens")
        check(entry.path, f"{written or folder}/{entry.name}", folder=entry.is_dir())


def quoted(text: str) -> str:
    """Text read from a file a spec names, for a diagnostic: itself, or when confined NOT_SHOWN (the
    author sees it with `runner validate` of their own spec, as themselves)."""
    return NOT_SHOWN if active() is not None else text
