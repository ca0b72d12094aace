"""How a run or a job failed: one vocabulary of failure kinds, for the run's manifest (runner.manifest),
the daemon's executors, its ledger of run directories and its job states (runner.daemon). A kind is
recorded and shown as itself everywhere (`runner status`, the page, the manifest): there is no second
list to map it to, and no default. A new kind is one line here.
"""

from __future__ import annotations

from enum import Enum


class Failure(str, Enum):
    PLAN = "plan"
    """Refused before training: the plan cannot run here, or (in the daemon) could not be made."""
    STALE = "stale"
    """Refused before training: an input changed since the plan was made."""
    DATA = "data"
    """Too many rows could not be used."""
    OOM = "oom"
    """Out of memory."""
    RUNTIME = "runtime"
    """An exception; a process that crashed or exited with an error."""
    DIVERGED = "diverged"
    """A loss became infinite or NaN."""
    INTERRUPTED = "interrupted"
    """Stopped by SIGINT/SIGTERM."""
    INTEGRITY = "integrity"
    """Parameters outside the plan changed."""
    KILLED = "killed"
    """Its processes ended without recording why (killed, out of memory, a lost node), or a run that kept
    vanishing was given up on."""
    TIMEOUT = "timeout"
    """It ran longer than the daemon's --job-timeout."""
    GATE = "gate"
    """A run whose evaluations missed a declared `require:` gate (evals.require): its weights are kept, and a
    {job: NAME} spec built on it does not start."""


FAILURE_KINDS = tuple(kind.value for kind in Failure)
