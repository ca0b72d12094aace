"""Starting a plan's processes on this machine.

One device: `runner run` trains in its own process. Several devices on one node: torchrun starts one
worker process per device (`--standalone`). Several nodes: `runner run --plan` runs on every node, each
starts torchrun with the same c10d rendezvous endpoint and launch id, and the torchruns assign the ranks.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runner.errors import UsageError
from runner.launch.records import Failure, Reports

if TYPE_CHECKING:  # an annotation only: the launchers (Slurm's too) stay clear of the manifest's models
    from runner.manifest import RunError

WORKER_RUN_DIR = "RUNNER_RUN_DIR"
"""Set for the worker processes of a multi-process run: the run directory they share."""
RENDEZVOUS_ENV = "RUNNER_RENDEZVOUS"
NODE_RANK_ENV = "RUNNER_NODE_RANK"
LAUNCH_ID_ENV = "RUNNER_LAUNCH_ID"

JOIN_TIMEOUT_S = 600
"""How long the nodes of a launch wait for each other (torchrun's rendezvous, and node 0's launch record)."""
SHUTDOWN_TIMEOUT_S = 120
"""After a stop signal, how long torchrun lets the workers write their checkpoint before it kills them."""
FAILURE_GRACE_S = 10
"""After any rank of the launch reported a failure, how long this node's workers may take to end by
themselves (a peer's death usually ends them at once) before they are stopped, so that none waits in a
collective operation forever."""

_LAUNCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Placement:
    """Which node of the plan this process is, and where the nodes meet."""

    nodes: int = 1
    node_rank: int = 0
    rendezvous: str | None = None
    """HOST:PORT of the torchrun c10d rendezvous; node 0 hosts it. Only with more than one node."""
    launch_id: str | None = None
    """The same on every node of one launch, new for every launch (Slurm: the job id and restart count)."""

    @property
    def leads(self) -> bool:
        """Node 0 chooses the run directory, writes the manifest and settles the outcome."""
        return self.node_rank == 0

    def environment(self) -> dict[str, str]:
        """What a worker process inherits, so that it knows its node and launch."""
        values = {NODE_RANK_ENV: str(self.node_rank), RENDEZVOUS_ENV: self.rendezvous,
                  LAUNCH_ID_ENV: self.launch_id}
        return {key: value for key, value in values.items() if value is not None}


def placement(nodes: int, *, rendezvous: str | None = None, node_rank: int | None = None,
              launch_id: str | None = None, environ: Mapping[str, str] = os.environ) -> Placement:
    """This process's place in a plan of `nodes` nodes: from the flags, else the environment
    (RUNNER_RENDEZVOUS, RUNNER_NODE_RANK or Slurm's SLURM_NODEID, RUNNER_LAUNCH_ID)."""
    launch_id = launch_id or environ.get(LAUNCH_ID_ENV) or None
    if launch_id is not None and not _LAUNCH_ID.match(launch_id):
        raise UsageError(f"launch id {launch_id!r} is not usable as a file name",
                         "use letters, digits, '.', '_' and '-' (at most 128)")
    if nodes == 1:
        if rendezvous is not None or node_rank is not None:
            raise UsageError("--rendezvous and --node-rank are for plans with hardware.nodes above 1; "
                             "this plan runs on one node", "leave them out")
        return Placement(launch_id=launch_id)
    rendezvous = rendezvous or environ.get(RENDEZVOUS_ENV) or None
    rank_text = str(node_rank) if node_rank is not None else environ.get(NODE_RANK_ENV, environ.get("SLURM_NODEID"))
    missing = [name for name, value in (("--rendezvous HOST:PORT", rendezvous), ("--node-rank", rank_text),
                                        ("--launch-id", launch_id)) if value is None]
    if missing:
        raise UsageError(
            f"this plan runs on {nodes} nodes: give {', '.join(missing)} (or set {RENDEZVOUS_ENV}, "
            f"{NODE_RANK_ENV}, {LAUNCH_ID_ENV})",
            f"on every node: runner run --plan PLAN --rendezvous NODE0:29500 --node-rank K --launch-id SAME-NEW-ID, "
            f"K = 0..{nodes - 1}; or submit it to Slurm: runner submit SPEC")
    host, _, port = rendezvous.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"rendezvous {rendezvous!r} is not HOST:PORT", "for example node0.cluster:29500")
    if not rank_text.isdigit() or int(rank_text) >= nodes:
        raise UsageError(f"node rank {rank_text!r} is not one of 0..{nodes - 1}", "node 0 hosts the rendezvous")
    return Placement(nodes=nodes, node_rank=int(rank_text), rendezvous=rendezvous, launch_id=launch_id)


SETTLE_TIMEOUT_S = SHUTDOWN_TIMEOUT_S + FAILURE_GRACE_S + 30
"""How long node 0 waits for the other nodes to say how their workers ended, after its own ended."""
_PEER_GONE = re.compile(r"connection (closed|reset) by peer|broken pipe|remote process exited|"
                        r"communicator was aborted|socket closed", re.IGNORECASE)


@dataclass(frozen=True)
class WorkersEnded:
    """How this node's workers ended, and on node 0 what the whole launch reported."""

    exit_code: int
    """torchrun's, on this node."""
    cause: Failure | None = None
    """Node 0: the first failure on any node (records.first_cause), if there was one."""
    signalled: bool = False
    """Node 0: some node's workers were stopped by a stop signal."""


def run_workers(plan_file: Path, run_dir: Path, run_root: Path, per_node: int, place: Placement,
                attempt: int) -> WorkersEnded:
    """Data-parallel training: this node's `per_node` worker processes under torchrun, each running the plan in
    the shared run directory. Node 0 then waits for every node's report of how its workers ended."""
    reports = Reports(run_dir, attempt)
    command = torchrun_command(sys.executable, per_node, place,
                               ["run", "--plan", str(plan_file), "--runs-dir", str(run_root)])
    code = supervise(command, {**os.environ, **place.environment(), WORKER_RUN_DIR: str(run_dir)}, reports, place)
    if not place.leads:
        return WorkersEnded(code)
    return WorkersEnded(code, reports.outcome(place.nodes, SETTLE_TIMEOUT_S), reports.signalled())


def report_worker_failure(run_dir: Path, attempt: int, rank: int, failure: RunError,
                          raised: BaseException | None) -> None:
    """A worker's recorded failure, for node 0's launcher to tell the first failure of the launch from its
    consequences: one `raised` because another process went away is marked secondary."""
    Reports(run_dir, attempt).rank_failed(Failure(
        node=int(os.environ.get(NODE_RANK_ENV, "0")), host=socket.gethostname(), kind=failure.kind,
        message=failure.message, at=time.time(), rank=rank, hint=failure.hint, traceback=failure.traceback,
        secondary=raised is not None and _peer_gone(raised)))


def _peer_gone(error: BaseException) -> bool:
    """Whether a collective operation failed because another process of the run went away."""
    import torch.distributed as dist

    return isinstance(error, dist.DistNetworkError) or bool(_PEER_GONE.search(str(error)))


def torchrun_command(python: str, per_node: int, place: Placement, runner_arguments: list[str]) -> list[str]:
    """torchrun starting `per_node` workers here, each running `python -m runner <runner_arguments>`."""
    if place.nodes == 1:
        where = ["--standalone"]
    else:
        is_host = "true" if place.leads else "false"
        where = [f"--nnodes={place.nodes}", f"--node-rank={place.node_rank}", "--rdzv-backend=c10d",
                 f"--rdzv-endpoint={place.rendezvous}", f"--rdzv-id={place.launch_id}",
                 f"--rdzv-conf=is_host={is_host},join_timeout={JOIN_TIMEOUT_S}"]
    return [python, "-m", "torch.distributed.run", *where, f"--nproc-per-node={per_node}", "--max-restarts=0",
            f"--shutdown-timeout={SHUTDOWN_TIMEOUT_S}", "-m", "runner", *runner_arguments]


def supervise(command: list[str], env: Mapping[str, str], reports: Reports, place: Placement) -> int:
    """Run torchrun to its end and record this node's end; return torchrun's exit code.

    A stop signal (Ctrl-C, the daemon, Slurm) reaches torchrun through the process group, and torchrun
    passes it to the workers, which checkpoint; this process only waits. Once any rank of the launch, on any
    node, has reported a failure, this node's workers get FAILURE_GRACE_S to end by themselves, then torchrun
    is told to stop them."""
    # torchrun stops its workers (they checkpoint) if this process is killed on its own
    child = subprocess.Popen(command, env=dict(env), preexec_fn=lambda: die_with_parent(signal.SIGTERM))
    signals: list[int] = []
    restore = _wait_through_signals(signals)
    failure_seen, stopped_by = None, None
    try:
        while child.poll() is None:
            time.sleep(0.2)
            if failure_seen is None and reports.failures():
                failure_seen = time.monotonic()
            if failure_seen is not None and stopped_by is None and time.monotonic() - failure_seen > FAILURE_GRACE_S:
                child.terminate()
                stopped_by = "failure"
    finally:
        restore()
    # torchrun ends with 1 after passing a stop signal on, even when every worker checkpointed and stopped
    stopped_by = stopped_by or ("signal" if signals else None)
    reports.node_ended(place.node_rank, socket.gethostname(), child.returncode, stopped_by=stopped_by)
    return child.returncode


def _wait_through_signals(received: list[int]):
    """While torchrun runs, a stop signal must not end this process: torchrun got the same signal from the
    group and stops the workers, and this process still has to record how they ended."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(sig, old) for sig, old in previous.items()]


def die_with_parent(signum: int) -> None:
    """Have the kernel send `signum` to this process when its parent dies (Linux; elsewhere nothing).
    torchrun runs each worker in a session of its own, so a kill -9 of the job's process group reaches
    torchrun but not the workers: without this, they would go on training beside a resumed run."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signum))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request
        os.kill(os.getpid(), signum)
