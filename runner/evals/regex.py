"""Regular expressions matched under a time bound, so that no pattern can hang a run.

Python's `re` backtracks: `(a+)+$` against forty `a`s and a `b` takes longer than the universe has.
The patterns come from a spec and the texts from a model, so each match runs in a small worker process
(the stdlib alone: `python -I -S`), and a match that takes longer than MATCH_SECONDS kills the worker;
the row scores 0 with a note, and the next match starts a fresh worker. The spec keeps Python's syntax,
which validate checks with `re.compile` (compiling is linear in the pattern; only matching backtracks).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time

MATCH_SECONDS = 2.0
"""A match that takes longer than this is stopped (real ones take microseconds)."""
START_SECONDS = 30.0
"""How long the worker may take to start (Python's start-up on a busy machine)."""

_WORKER = r"""
import json, re, sys
sys.stdout.write("ready\n")
sys.stdout.flush()
compiled = {}
for line in sys.stdin:
    request = json.loads(line)
    key = (request["p"], request["i"])
    if key not in compiled:
        compiled[key] = re.compile(request["p"], re.IGNORECASE if request["i"] else 0)
    pattern = compiled[key]
    found = (pattern.fullmatch if request["full"] else pattern.search)(request["t"])
    sys.stdout.write("1\n" if found else "0\n")
    sys.stdout.flush()
"""


class MatchTimedOut(Exception):
    """A match ran past MATCH_SECONDS; its worker was killed."""


class BoundedRegex:
    """Matches pattern against texts in a worker process; safe to share between threads."""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = seconds if seconds is not None else MATCH_SECONDS
        self.process: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def matches(self, pattern: str, text: str, *, full: bool = False, ignore_case: bool = False) -> bool:
        """Whether `pattern` matches `text`; MatchTimedOut when it takes longer than the bound."""
        request = json.dumps({"p": pattern, "i": ignore_case, "full": full, "t": text}) + "\n"
        with self.lock:
            try:
                process = self._worker()
                process.stdin.write(request.encode())
                process.stdin.flush()
                reply = self._reply(process, self.seconds)
            except OSError as error:
                self._stop()
                raise RuntimeError(f"the regex worker ended: {error}") from None
            if reply is None:
                self._stop()
                raise MatchTimedOut(f"matching took longer than {self.seconds:g} s")
            return reply == b"1"

    def _worker(self) -> subprocess.Popen:
        """The worker, started when there is none: it says `ready` once Python is up (START_SECONDS on a busy
        machine), so that the match's own time bound counts the match alone."""
        if self.process is None:
            self.process = subprocess.Popen([sys.executable, "-I", "-S", "-c", _WORKER], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            if self._reply(self.process, START_SECONDS) != b"ready":
                raise OSError(f"it did not start within {START_SECONDS:g} s")
        return self.process

    def _reply(self, process: subprocess.Popen, limit: float) -> bytes | None:
        """The worker's one-line answer, or None when it does not come within `limit` seconds."""
        deadline = time.monotonic() + limit
        answer = b""
        descriptor = process.stdout.fileno()
        while not answer.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([descriptor], [], [], left)[0]:
                return None
            chunk = os.read(descriptor, 64)
            if not chunk:
                raise OSError("no answer")
            answer += chunk
        return answer.strip()

    def _stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                stream.close()
            self.process = None

    def close(self) -> None:
        with self.lock:
            self._stop()

    def __enter__(self) -> BoundedRegex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
