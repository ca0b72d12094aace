"""`runner worker`: the watch daemon's planning worker (started by the daemon, not by people).

Reads check and plan requests as JSON lines on stdin and answers each on stdout: see
runner.daemon.worker.
"""

from __future__ import annotations


def worker() -> int:
    from runner.daemon.worker import plan_job, serve

    return serve(plan_job)
