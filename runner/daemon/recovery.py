"""Recovery, at the daemon's start: the run directories first (runner.daemon.ledger): a finished manifest is
the job's outcome, never a reason to run it again, and runs the store does not know (it was lost, emptied,
or moved aside) become jobs again; then the jobs a daemon that died left `running`: their runs are adopted
where the executor still has them, recorded where they finished meanwhile, resumed otherwise."""

from __future__ import annotations

import time
from datetime import datetime

from runner.daemon import ledger, states
from runner.daemon.config import DaemonConfig
from runner.daemon.jobs import Jobs, one_line
from runner.daemon.running import Running
from runner.daemon.states import State, Status
from runner.manifest import Manifest
from runner.rundir import RunDirectory


class Recovery:
    def __init__(self, config: DaemonConfig, jobs: Jobs, running: Running) -> None:
        self.config, self.jobs, self.store, self.log = config, jobs, jobs.store, jobs.log
        self.running = running

    def recover(self) -> None:
        """Make the store say what the run directories say, then handle rows left `running` by a
        daemon that died: adopt live runs, record runs that finished meanwhile, resume the others."""
        self._import_runs()
        for job in self.store.jobs(State.RUNNING):
            with self.jobs.guard(job):
                if not self.running.adopt(job) and \
                        not self.running.record_finished(job, "it finished while the daemon was down"):
                    self.running.vanished(job, "its process vanished while the daemon was down")

    def _import_runs(self) -> None:
        """Runs the store does not know (it was lost, emptied, or moved aside) become rows again: one per
        spec content, as its succeeded run says, else as its newest run says."""
        known = {job.sha256 for job in self.store.jobs()}
        found: dict[str, tuple[RunDirectory, Manifest]] = {}
        for run, manifest in ledger.daemon_runs(self.config.runs_dir, self.config.state_dir):  # oldest first
            kept = found.get(manifest.spec_sha256)
            if manifest.spec_sha256 not in known and (kept is None or kept[1].state != "succeeded"):
                found[manifest.spec_sha256] = (run, manifest)
        for sha256, (run, manifest) in found.items():
            recorded = ledger.outcome(manifest)
            plan = manifest.plan
            fields = dict(run_dir=str(run.path), attempts=len(manifest.attempts),
                          started_at=_epoch(manifest.timings.started_at), priority=plan.spec.get("priority") or 0)
            if recorded is not None:
                status = Status(recorded.state)
                fields.update(failure=recorded.failure, finished_at=time.time(),
                              reason=f"{one_line(recorded.reason)} (recorded from its run directory)")
            else:
                status = states.RECOVERING
                fields.update(plan_path=str(run.plan), estimate_bytes=sum(item.bytes for item in plan.memory.items),
                              devices=plan.device.count, device_type=plan.device.type,
                              reason="recorded from its run directory; resuming")
            job = self.store.add(plan.inputs.spec_source or plan.inputs.spec_path, sha256, manifest.name, status,
                                 **fields)
            self.jobs.logged(job, None, status)
        if found:
            self.log.msg("store_rebuilt", runs=len(found),
                         detail="jobs recorded from run directories the store did not know")


def _epoch(stamp: str | None) -> float | None:
    try:
        return datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None
