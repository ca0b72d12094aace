"""A wall-clock limit on a stretch of Python code in the main thread: for work a spec controls that
is quick when honest and may never end when not (a chat template's nested loops each within the
sandbox's range limit, but not their product).

SIGALRM interrupts between bytecodes, so it ends loops in Python code (Jinja's compiled templates
are); a single call into C is not interrupted. Off the main thread (signals reach only it) the code
runs without a limit. No torch; stdlib only.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class OverTime(Exception):
    """The code ran past its limit."""


@contextlib.contextmanager
def limited(seconds: float) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise OverTime(f"took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:  # a limit around this one goes on with what it had left (at least a moment)
            signal.setitimer(signal.ITIMER_REAL, max(outer - seconds, 0.001))
