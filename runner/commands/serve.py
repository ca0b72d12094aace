"""`runner serve`: the status page and JSON API of a daemon's state dir, without being the daemon (read-only)."""

from __future__ import annotations

import signal

from runner.errors import ExitCode


def serve(state_dir: str | None, address: str) -> int:
    from runner.box import state_directory
    from runner.daemon.report import runs_directory
    from runner.daemon.store import Store
    from runner.daemon.web import Page

    state = state_directory(state_dir)
    Store.existing(state, writable=False).close()  # a mistyped --state-dir says so now, not on every request
    stops = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # before the server's threads start: they inherit it
    page = Page.bind(address, state, runs_directory(state))
    page.start()
    print(f"runner serve: {page.url} (read-only; Ctrl-C stops)", flush=True)
    try:
        signal.sigwait(stops)  # no handler at all: nothing runs at an arbitrary moment
    finally:
        page.stop()
    return ExitCode.OK
